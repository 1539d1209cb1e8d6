"""Chinese first, English second: the words people read for an alert's kind, type, severity and change.

The chat-group robots build their text from these (not from the edge's English title alone), and the page and
the CAP feed can take the same words. A type not in the table reads as itself, its underscores as spaces, in
both languages: a new detector never leaves a message without a name.

Example:
    >>> headline("fire", "smoke", "Building 5")
    '火警 Fire alarm: 烟雾 smoke — Building 5'
    >>> both(TYPES, "camera_blinded"), both(TYPES, "new_gadget_fault")
    ('摄像头被遮挡 camera blinded', 'new gadget fault')
    >>> both(SEVERITIES, "critical"), both(CHANGES, "false_alarm")
    ('紧急 critical', '误报 false alarm')
"""

from __future__ import annotations

KINDS: dict[str, tuple[str, str]] = {
    "security": ("治安", "Security"),
    "fire": ("火警", "Fire alarm"),
    "trouble": ("故障", "Trouble"),
    "report": ("群众举报", "Citizen report"),
}
"""Alert kinds: (Chinese, English)."""

TYPES: dict[str, tuple[str, str]] = {
    # fire
    "smoke": ("烟雾", "smoke"),
    "flame": ("明火", "flame"),
    "fire": ("火情", "fire"),
    "heat": ("高温", "heat"),
    "rate_of_rise": ("温度骤升", "temperature rising fast"),
    "gas": ("燃气泄漏", "gas"),
    "carbon_monoxide": ("一氧化碳", "carbon monoxide"),
    "test": ("探测器测试", "detector test"),
    # security
    "intrusion": ("入侵", "intrusion"),
    "loitering": ("徘徊", "loitering"),
    "line_crossing": ("越线", "line crossing"),
    "illegal_parking": ("违章停车", "illegal parking"),
    "zone_occupied": ("占道", "zone occupied"),
    "crowd": ("人员聚集", "crowd"),
    # trouble
    "camera_offline": ("摄像头离线", "camera offline"),
    "camera_blinded": ("摄像头被遮挡", "camera blinded"),
    "camera_defocused": ("摄像头失焦", "camera out of focus"),
    "camera_moved": ("摄像头被移动", "camera moved"),
    "battery_low": ("电量低", "battery low"),
    "sensor_tamper": ("传感器被拆动", "sensor tampered with"),
    "sensor_offline": ("传感器离线", "sensor offline"),
    "sensor_silent": ("传感器无信号", "sensor silent"),
    "node_offline": ("节点离线", "node offline"),
    # reports
    "citizen_report": ("群众举报", "citizen report"),
}
"""Alert types: (Chinese, English)."""

SEVERITIES: dict[str, tuple[str, str]] = {
    "info": ("提示", "info"),
    "minor": ("一般", "minor"),
    "major": ("重要", "major"),
    "critical": ("紧急", "critical"),
}

CHANGES: dict[str, tuple[str, str]] = {
    "raised": ("新告警", "raised"),
    "updated": ("更新", "updated"),
    "cleared": ("已消除", "cleared"),
    "acknowledged": ("已确认", "acknowledged"),
    "resolved": ("已处置", "resolved"),
    "false_alarm": ("误报", "false alarm"),
}
"""Alert changes, as the streams and webhooks name them."""

LABELS: dict[str, tuple[str, str]] = {
    "change": ("状态", "Change"),
    "severity": ("级别", "Severity"),
    "place": ("地点", "Place"),
    "time": ("时间", "Time"),
    "on_duty": ("值班", "On duty"),
    "detail": ("详情", "Detail"),
    "open": ("查看告警", "Open the alert"),
    "open_page": ("打开告警页", "Open the alert page"),
}
"""The labels of a message's lines and buttons."""


def pair(table: dict[str, tuple[str, str]], key: str) -> tuple[str, str]:
    """(Chinese, English) for ``key``; a key not in the table reads as itself (underscores as spaces)."""
    plain = key.replace("_", " ")
    return table.get(key, (plain, plain))


def both(table: dict[str, tuple[str, str]], key: str) -> str:
    """ "中文 English", or the key once when there is no Chinese for it."""
    zh, en = pair(table, key)
    return zh if zh == en else f"{zh} {en}"


def headline(kind: str, type_: str, where: str) -> str:
    """The first line of a message: kind and type, Chinese first, then where."""
    return f"{both(KINDS, kind)}: {both(TYPES, type_)} — {where}"

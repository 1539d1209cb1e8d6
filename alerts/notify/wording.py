"""Chinese first, English second: the words people read for an alert's kind, type, severity and change.

The chat-group robots build their text from these (not from the edge's English title alone), and the page and
the CAP feed take the same words: ``title`` builds an alert's title in one language from its type and
attributes, and the page gets these tables (``GET /api/v1/wording``) and fills the same templates the same way.
A type not in the table reads as itself, its underscores as spaces, in both languages: a new detector never
leaves a message without a name.

Example:
    >>> headline("fire", "smoke", "Building 5")
    '火警 Fire alarm: 烟雾 smoke — Building 5'
    >>> both(TYPES, "camera_blinded"), both(TYPES, "new_gadget_fault")
    ('摄像头被遮挡 camera blinded', 'new gadget fault')
    >>> both(SEVERITIES, "critical"), both(CHANGES, "false_alarm")
    ('紧急 critical', '误报 false alarm')
    >>> both(KINDS, "enforcement"), both(TYPES, "road_stall"), both(CHANGES, "case_rectified")
    ('执法 Enforcement', '占道经营 road-occupying stall', '案件已整改 case rectified')
    >>> title("loitering", {"class": "person", "zone": "walkway", "duration_s": 75}, "cam-1", "", "zh-CN")
    '徘徊：人员在walkway停留75秒'
    >>> title("smoke", {}, "smoke-1", "Smoke alarm at Building 5", "zh-CN")
    '烟雾：smoke-1'
"""

from __future__ import annotations

import re
from typing import Any, get_args

from alerts.store.people import Language

KINDS: dict[str, tuple[str, str]] = {
    "security": ("治安", "Security"),
    "fire": ("火警", "Fire alarm"),
    "trouble": ("故障", "Trouble"),
    "report": ("群众举报", "Citizen report"),
    "enforcement": ("执法", "Enforcement"),
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
    # reports (alerts.api.reports.CATEGORIES; illegal_parking is above)
    "citizen_report": ("群众举报", "citizen report"),
    "suspicious_person": ("可疑人员", "suspicious person"),
    "unlocked_ebike": ("电动车未上锁", "unlocked e-bike"),
    "counterfeit_money": ("假币", "counterfeit money"),
    "fire_hazard": ("消防隐患", "fire hazard"),
    "road_stall": ("占道经营", "road-occupying stall"),
    "illegal_building": ("违章建筑", "illegal building"),
}
"""Alert types: (Chinese, English)."""

CLASSES: dict[str, tuple[str, str]] = {
    "person": ("人员", "person"),
    "bicycle": ("自行车", "bicycle"),
    "car": ("汽车", "car"),
    "motorcycle": ("摩托车", "motorcycle"),
    "bus": ("公交车", "bus"),
    "truck": ("货车", "truck"),
}
"""What a camera detected, as the rules' ``class`` attribute names it."""

DIRECTIONS: dict[str, tuple[str, str]] = {"in": ("进入", "in"), "out": ("离开", "out")}

TITLES: dict[str, tuple[str, str]] = {
    "intrusion": ("入侵：{class}进入{zone}", "Intrusion: {class} in {zone}"),
    "loitering": ("徘徊：{class}在{zone}停留{seconds}秒", "Loitering: {class} in {zone} for {seconds} s"),
    "line_crossing": ("越线：{class}越过{line}（{direction}）", "Line crossing: {class} crossed {line} ({direction})"),
    "illegal_parking": (
        "违章停车：{class}在{zone}停放{minutes}分钟",
        "Illegal parking: {class} in {zone} for {minutes} min",
    ),
    "zone_occupied": ("占道：{zone}被占用{minutes}分钟", "Zone occupied: {zone} for {minutes} min"),
    "crowd": ("人员聚集：{zone}内{count}人", "Crowd: {count} in {zone}"),
}
"""Titles built from an alert's attributes, by type: (Chinese, English) templates whose ``{name}`` fields are
``parameters``'. A type without one reads ``GENERIC``."""

GENERIC = ("{type}：{where}", "{Type}: {where}")
"""The title of a type without a template: its words and the device (or site)."""

LANGUAGES: tuple[Language, ...] = get_args(Language)
"""The languages, in the order of the tables' pairs."""

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
    "escalated": ("已升级", "escalated"),
    "unacknowledged": ("确认超时未处置", "acknowledgement timed out"),
    "replied": ("已回复举报人", "replied to the reporter"),
    "clip_ready": ("视频片段已上传", "video clip ready"),
    # an enforcement case's steps (alerts.store.cases: case_<the status a step leaves>)
    "case_assigned": ("案件已指派", "case assigned"),
    "case_rectified": ("案件已整改", "case rectified"),
    "case_rechecked": ("案件已复查", "case rechecked"),
    "case_closed": ("案件已结案", "case closed"),
    "case_reopened": ("案件已重新打开", "case reopened"),
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


_FIELD = re.compile(r"\{(\w+)\}")


def parameters(type_: str, attributes: dict[str, Any], where: str, language: Language) -> dict[str, str]:
    """The values a title template may name, in ``language``: those the attributes have, and always the type's
    words (``type``, ``Type`` capitalised) and ``where``.

    >>> sorted(parameters("crowd", {"zone": "plaza", "count": 9}, "cam-1", "en").items())
    [('Type', 'Crowd'), ('count', '9'), ('type', 'crowd'), ('where', 'cam-1'), ('zone', 'plaza')]
    """
    index = LANGUAGES.index(language)
    words = pair(TYPES, type_)[index]
    values = {"type": words, "Type": words[:1].upper() + words[1:], "where": where}
    for name in ("zone", "line", "count"):
        if attributes.get(name) is not None:
            values[name] = str(attributes[name])
    for name, table in (("class", CLASSES), ("direction", DIRECTIONS)):
        if attributes.get(name) is not None:
            values[name] = pair(table, str(attributes[name]))[index]
    duration = attributes.get("duration_s")
    if isinstance(duration, int | float):
        values |= {"seconds": f"{duration:.0f}", "minutes": f"{duration / 60:.0f}"}
    return values


def fill(template: str, values: dict[str, str]) -> str | None:
    """The template with its fields filled in; None when a field has no value.

    >>> fill("{a} and {b}", {"a": "1", "b": "2"}), fill("{a} and {c}", {"a": "1"})
    ('1 and 2', None)
    """
    names = _FIELD.findall(template)
    if any(name not in values for name in names):
        return None
    return _FIELD.sub(lambda m: values[m[1]], template)


def title(type_: str, attributes: dict[str, Any], where: str, edge_title: str, language: Language) -> str:
    """An alert's title in ``language``: its type's template filled from its attributes; else, in English, the
    edge's title (which names the sensor as the site calls it); else the type's words and ``where``. A type
    that none of the tables knows keeps the edge's title in both languages."""
    index = LANGUAGES.index(language)
    values = parameters(type_, attributes, where, language)
    built = fill(TITLES[type_][index], values) if type_ in TITLES else None
    if built is not None:
        return built
    if edge_title and (language == "en" or type_ not in TYPES):
        return edge_title
    return fill(GENERIC[index], values) or type_


def tables() -> dict[str, dict[str, tuple[str, str]]]:
    """Every table, by name, for the page."""
    return {
        "kinds": KINDS, "types": TYPES, "severities": SEVERITIES, "changes": CHANGES, "classes": CLASSES,
        "directions": DIRECTIONS, "titles": TITLES, "generic": {"title": GENERIC},
    }  # fmt: skip

"""Grids and their teams on the real API and database: imported from CSV files and from an XLSX workbook (by the
API and by ``patrolnet grid``), a bad line reported by its number with nothing imported, scoping, and the grid
view with its open alert, its devices and its team; an alert names its grid's team."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import psycopg
from api_helpers import EAST, PASSWORD, get, raise_alert, session_headers, sign_in, write
from conftest import REPO, ApiServer
from openpyxl import Workbook

from alerts.core.models import DeviceStatus, EventKind, Heartbeat
from alerts.store.database import WriteBatch

GRIDS_CSV = """网格编号,网格名称,社区,街道,地址
g07,Willow Court blocks,east-gate,riverside,"5 Elm Row;7 Elm Row"
g02,Pine Yard,west-lake,lakeside,9 Lake Road
"""
PEOPLE_CSV = f"""login,name,phone,role,community,grid,leader,password
wang.fang,Wang Fang,+86 138 0000 0001,网格员,east-gate,g07,是,{PASSWORD}
zhao.lei,Zhao Lei,+86 138 0000 0002,grid_worker,east-gate,g07,no,
sun.li,Sun Li,+86 138 0000 0003,police,west-lake,g02,yes,
"""
GRID_HEADER = ["网格编号", "网格名称", "社区", "街道", "地址"]
PEOPLE_HEADER = ["账号", "姓名", "电话", "角色", "社区", "网格编号", "组长"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def upload(api: ApiServer, headers: dict[str, str], *files: tuple[str, bytes]) -> httpx.Response:
    content = [("files", (name, data, XLSX if name.endswith(".xlsx") else "text/csv")) for name, data in files]
    return httpx.post(f"{api.url}/api/v1/grids/import", headers=headers, files=content)


def counts(database_url: str) -> tuple[int, ...]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM grids), (SELECT count(*) FROM people), (SELECT count(*) FROM grid_members)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def workbook(people: list[list[object]]) -> bytes:
    """A workbook as a district keeps it: a grids sheet and a people sheet, Chinese headers."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "网格"
    sheet.append(GRID_HEADER)
    sheet.append(["g07", "Willow Court blocks", "east-gate", "riverside", "5 Elm Row、7 Elm Row"])
    staff = book.create_sheet("人员")
    staff.append(PEOPLE_HEADER)
    for row in people:
        staff.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_grid_and_its_people_import_from_csv_and_its_view_lists_its_open_alert_and_team(api: ApiServer) -> None:
    admin = api.key("admin")
    files = (("grids.csv", GRIDS_CSV.encode()), ("people.csv", PEOPLE_CSV.encode()))
    done = upload(api, admin, *files)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "grids_added": 2, "grids_changed": 0, "people_added": 3, "people_changed": 0,
        "need_password": ["zhao.lei", "sun.li"],
    }  # fmt: skip
    # A person with a password signs in, scoped to their grid; the others wait for an admin to set one.
    me = get(api, "/api/v1/whoami", session_headers(sign_in(api, "wang.fang"), csrf=False)).json()
    assert (me["role"], me["sub_district"], me["community"], me["grid"]) == (
        "grid_worker",
        "riverside",
        "east-gate",
        "g07",
    )

    _, alert = raise_alert(api.database_url)  # a fire in east-gate/g07
    fire = api.key("fire", community="east-gate")
    listed = get(api, "/api/v1/grids", fire).json()
    assert [(g["community"], g["grid"], g["members"], g["leader"]) for g in listed] == [
        ("east-gate", "g07", 2, "Wang Fang")
    ], "a community's desk sees only its grids"
    view = get(api, "/api/v1/grids/east-gate/g07", fire).json()
    assert [a["id"] for a in view["alerts"]] == [str(alert.id)]
    assert view["grid"]["addresses"] == ["5 Elm Row", "7 Elm Row"] and view["grid"]["name"] == "Willow Court blocks"
    assert view["team"]["leader"]["login"] == "wang.fang"
    assert [(m["login"], m["phone"], m["leader"]) for m in view["team"]["members"]] == [
        ("wang.fang", "+86 138 0000 0001", True),
        ("zhao.lei", "+86 138 0000 0002", False),
    ]
    assert get(api, "/api/v1/grids/west-lake/g02", fire).status_code == 404
    detail = get(api, f"/api/v1/alerts/{alert.id}", fire).json()
    assert detail["grid_team"]["leader"]["name"] == "Wang Fang", "the alert names who answers for its grid"

    again = upload(api, admin, *files).json()
    assert (again["grids_changed"], again["people_added"], again["people_changed"]) == (2, 0, 0), "idempotent"
    moved = PEOPLE_CSV.replace("zhao.lei,Zhao Lei,+86 138 0000 0002,grid_worker,east-gate,g07,no", "zhao.lei,Zhao Lei,"
                               "+86 138 0000 0002,grid_worker,east-gate,g07,yes").replace(",是,", ",否,")  # fmt: skip
    assert upload(api, admin, ("people.csv", moved.encode())).json()["people_changed"] == 2
    assert get(api, "/api/v1/grids/east-gate/g07", fire).json()["team"]["leader"]["login"] == "zhao.lei"


def test_a_bad_line_is_reported_by_number_and_nothing_is_imported(api: ApiServer) -> None:
    admin = api.key("admin")
    before = counts(api.database_url)
    bad_people = PEOPLE_CSV.replace("sun.li,Sun Li,+86 138 0000 0003,police", "sun.li,Sun Li,+86 138 0000 0003,chef")
    refused = upload(api, admin, ("grids.csv", GRIDS_CSV.encode()), ("people.csv", bad_people.encode()))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        "people.csv:4: role: unknown role 'chef'; one of grid_worker, police, fire, operator, city_management,"
        " traffic_police (网格员, 民警, 警察, 消防, 运维, 城管, 交警)"
    ]
    assert counts(api.database_url) == before, "the good grids and people were not imported either"

    no_community = GRIDS_CSV.replace("g02,Pine Yard,west-lake,lakeside", "g02,Pine Yard,,lakeside")
    refused = upload(api, admin, ("grids.csv", no_community.encode()), ("people.csv", PEOPLE_CSV.encode()))
    assert refused.status_code == 422 and refused.json()["errors"] == ["grids.csv:3: community: Field required"]
    refused = upload(api, admin, ("grids.xlsx", b"PK\x03\x04 not a workbook"))
    assert refused.status_code == 422 and refused.json()["errors"][0].startswith("grids.xlsx: not an XLSX workbook")
    assert counts(api.database_url) == before
    assert upload(api, api.key("police"), ("grids.csv", GRIDS_CSV.encode())).status_code == 403


def test_a_workbook_imports_by_the_command_and_a_bad_row_is_named_by_sheet_and_line(api: ApiServer, tmp_path) -> None:
    env = {"PATROLNET_DATABASE_URL": api.database_url, "PATH": "/usr/bin:/bin"}

    def grid(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "deploy.cli", "grid", *args]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)

    bad = tmp_path / "book.xlsx"
    bad.write_bytes(workbook([["wang.fang", "Wang Fang", 13800000001, "网格员", "east-gate", "g07", "maybe"]]))
    done = grid("import", str(bad))
    assert done.returncode == 1 and "book.xlsx[人员]:2: leader: 'maybe' is not yes or no (是/否)" in done.stderr
    assert counts(api.database_url)[0] == 0

    good = tmp_path / "district.xlsx"
    good.write_bytes(
        workbook([
            ["wang.fang", "Wang Fang", 13800000001, "网格员", "east-gate", "g07", "是"],
            ["zhao.lei", "Zhao Lei", 13800000002, "grid_worker", "east-gate", "g07", None],
        ])
    )  # fmt: skip
    done = grid("import", str(good))
    assert done.returncode == 0, done.stderr
    assert "grids: 1 added, 0 changed; people: 2 added" in done.stdout and "wang.fang, zhao.lei" in done.stdout
    listed = grid("list").stdout
    assert "riverside/east-gate/g07" in listed and "team: 2" in listed and "leader: Wang Fang" in listed
    team = get(api, "/api/v1/grids/east-gate/g07", api.key("admin")).json()["team"]
    assert [(m["name"], m["phone"]) for m in team["members"]] == [
        ("Wang Fang", "13800000001"),
        ("Zhao Lei", "13800000002"),
    ]

    # The same rows by the API, with a mistake on the people sheet's third line.
    data = workbook([["li.na", "Li Na", "", "消防", "east-gate", "g07", ""], ["x", "", "", "fire", "east-gate", "g07"]])
    refused = upload(api, api.key("admin"), ("book.xlsx", data))
    assert refused.status_code == 422 and refused.json()["errors"] == ["book.xlsx[人员]:3: name: Field required"], (
        refused.text
    )


def test_an_admin_imports_within_their_scope_and_the_view_shows_devices_to_who_may_see_them(api: ApiServer) -> None:
    east_admin = api.key("admin", community="east-gate")
    refused = upload(api, east_admin, ("grids.csv", GRIDS_CSV.encode()))
    assert refused.status_code == 422
    assert refused.json()["errors"] == ["grids.csv:3: grid: outside your scope (community 'east-gate')"]
    only_east = "\n".join(GRIDS_CSV.splitlines()[:2]) + "\n"
    # As a Chinese Excel saves CSV: in GB18030, not UTF-8.
    assert upload(api, east_admin, ("grids.csv", only_east.encode("gb18030"))).status_code == 200
    assert get(api, "/api/v1/grids", east_admin).json()[0]["name"] == "Willow Court blocks"

    now = datetime.now(UTC)
    device = DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True)
    beat = Heartbeat(node_id="node-1", place=EAST.model_copy(update={"device": None}), started_at=now, devices=[device])
    write(api.database_url, WriteBatch(heartbeats=[beat]))
    raise_alert(api.database_url, kind=EventKind.SECURITY, type="intrusion")
    police = get(api, "/api/v1/grids/east-gate/g07", api.key("police", community="east-gate")).json()
    assert [d["device"] for d in police["devices"]] == ["smoke-1"]
    assert [n["node_id"] for n in police["nodes"]] == ["node-1"]
    assert [s["site"] for s in police["sites"]] == ["poison-court", "willow-court"], "the sites registered in g07"
    assert len(police["alerts"]) == 1
    fire = get(api, "/api/v1/grids/east-gate/g07", api.key("fire", community="east-gate")).json()
    assert fire["alerts"] == [], "a desk sees the grid's open alerts of its own kinds"
    city = get(api, "/api/v1/grids/east-gate/g07", api.key("city_management")).json()
    assert city["devices"] is None and city["nodes"] is None, "a role without devices sees none"
    assert get(api, "/api/v1/grids/east-gate/g07", {}).status_code == 401

"""Enforcement case routes: the cases a desk may see, one case with its steps and photos, the desk's steps
(assign, rectify with photos, recheck with the camera's picture, held and asked for, close, reopen), joint
operations, and weekly counts as JSON or CSV. Who may see a case is who may see its alert; the SQL is in
``alerts.store.cases``."""

from __future__ import annotations

import csv
import io
import logging
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from alerts.api.http import Actor, Pool, Reader, Settings, refusal
from alerts.api.media import image_type
from alerts.api.routes_people import person_principal
from alerts.auth import Principal
from alerts.store import cases
from alerts.store.cases import (
    Case,
    CaseQuery,
    CaseStep,
    Department,
    JointOperation,
    JointOperationIn,
    JointQuery,
    StepIn,
    WeeklyCount,
    WeeklyQuery,
)
from alerts.store.people import UNSCOPED, find_person

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/cases", tags=["enforcement cases"])
MAX_PHOTOS = 6
STEP_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: refusal("no case with this id that the caller may see"),
    409: refusal("the case's status does not allow this step"),
}


class CaseDetail(BaseModel):
    case: Case = Field(description="The case.")
    steps: list[CaseStep] = Field(description="Its steps, oldest first, with their photos.")
    picture: Literal["requested"] | None = Field(
        default=None,
        description="A camera case's recheck: the camera's picture now is requested of its node, and joins the "
        "step's photos when it comes (a case_picture change on the stream); the picture held before is attached.",
    )


class Assignment(BaseModel):
    person_id: UUID | None = Field(default=None, description="The person who works it (one who may see its alert).")
    department: Department | None = Field(default=None, description="The department (default: as it is).")
    deadline: AwareDatetime | None = Field(default=None, description="When it must be rectified by.")
    note: str = Field(default="", max_length=2000, description="What the desk wrote.")


class WeeklyRequest(WeeklyQuery):
    format: Literal["json", "csv"] = Field(default="json", description="json, or csv (as /weekly.csv).")


class Note(BaseModel):
    note: str = Field(default="", max_length=2000, description="What the desk did or saw.")


@router.get("", summary="The enforcement cases the caller may see, newest first")
async def list_cases(pool: Pool, who: Reader, q: Annotated[CaseQuery, Query()]) -> list[Case]:
    return await cases.list_cases(pool, who, q)


def _csv(rows: list[WeeklyCount]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(WeeklyCount.model_fields)
    writer.writerows([r.week.isoformat(), r.community, r.department, r.type, r.opened, r.closed] for r in rows)
    headers = {"Content-Disposition": 'attachment; filename="cases-weekly.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


async def _weekly(pool: Pool, who: Principal, q: WeeklyQuery) -> list[WeeklyCount]:
    try:
        q.bounds()
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return await cases.weekly_counts(pool, who, q)


@router.get(
    "/weekly",
    summary="Cases opened and closed per week, community, department and type (JSON, or CSV with format=csv)",
    response_model=list[WeeklyCount],
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
async def weekly(pool: Pool, who: Reader, q: Annotated[WeeklyRequest, Query()]) -> Response:
    rows = await _weekly(pool, who, q)
    if q.format == "csv":
        return _csv(rows)
    body = "[" + ",".join(r.model_dump_json() for r in rows) + "]"
    return Response(body, media_type="application/json")


@router.get(
    "/weekly.csv",
    summary="The weekly counts as CSV",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "week,community,department,type,opened,closed"}},
)
async def weekly_csv(pool: Pool, who: Reader, q: Annotated[WeeklyQuery, Query()]) -> Response:
    return _csv(await _weekly(pool, who, q))


@router.get("/joint-operations", summary="Joint operations within the caller's community, newest first")
async def list_joint_operations(pool: Pool, who: Reader, q: Annotated[JointQuery, Query()]) -> list[JointOperation]:
    return await cases.joint_operations(pool, who, q)


@router.post(
    "/joint-operations",
    status_code=201,
    summary="Record a joint operation: its day, departments, team and the cases it handled",
    responses={422: refusal("a case the caller may not see")},
)
async def add_joint_operation(pool: Pool, who: Actor, body: JointOperationIn) -> JointOperation:
    if body.case_ids:
        async with pool.connection() as conn:
            seen = {c.id for c in await cases.visible_cases(conn, who, body.case_ids)}
        if missing := [str(i) for i in body.case_ids if i not in seen]:
            raise HTTPException(422, f"no case that this caller may see: {', '.join(missing[:10])}")
    return await cases.add_joint_operation(pool, who, body)


async def _case(pool: Pool, who: Principal, case_id: UUID) -> Case:
    found = await cases.find_case(pool, who, case_id)
    if found is None:
        raise HTTPException(404, f"no case {case_id} that this caller may see")
    return found


@router.get("/{case_id}", summary="One case with its steps and their photos", responses={404: STEP_REFUSALS[404]})
async def get_case(pool: Pool, who: Reader, case_id: UUID) -> CaseDetail:
    case = await _case(pool, who, case_id)
    return CaseDetail(case=case, steps=await cases.case_steps(pool, case_id))


@router.get(
    "/{case_id}/photos/{photo_id}",
    summary="A photo of a case's step",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the picture"}},
)
async def get_photo(pool: Pool, who: Reader, case_id: UUID, photo_id: UUID) -> Response:
    await _case(pool, who, case_id)
    found = await cases.case_photo(pool, case_id, photo_id)
    if found is None:
        raise HTTPException(404, f"no photo {photo_id} of case {case_id}")
    return Response(found[1], media_type=found[0], headers={"Cache-Control": "private, max-age=3600"})


async def _step(pool: Pool, who: Principal, case_id: UUID, action: str, step: StepIn, photos=()) -> CaseDetail:
    case = await _case(pool, who, case_id)
    if (refused := cases.allowed(action, case.status)) is not None:
        raise HTTPException(409, refused)
    if (refused := await cases.take_step(pool, case, action, who, step, list(photos))) is not None:
        raise HTTPException(409, f"{refused}: the case changed meanwhile; reload it")
    return CaseDetail(case=await _case(pool, who, case_id), steps=await cases.case_steps(pool, case_id))


@router.post(
    "/{case_id}/assign",
    summary="Assign the case to a person (and a department, a deadline)",
    responses={**STEP_REFUSALS, 422: refusal("the person is disabled or may not see the case")},
)
async def assign(pool: Pool, who: Actor, case_id: UUID, body: Assignment) -> CaseDetail:
    assignee = None
    if body.person_id is not None:
        async with pool.connection() as conn:
            person = await find_person(conn, UNSCOPED, body.person_id)
        if person is None or person.disabled:
            raise HTTPException(422, f"no enabled person {body.person_id}")
        if await cases.find_case(pool, person_principal(person), case_id) is None:
            raise HTTPException(422, f"{person.name} may not see this case")
        assignee = (person.name, person.id)
    step = StepIn(note=body.note, department=body.department, assignee=assignee, deadline=body.deadline)
    return await _step(pool, who, case_id, "assign", step)


async def _photos(photos: list[UploadFile], limit: int) -> list[tuple[str, bytes]]:
    if len(photos) > MAX_PHOTOS:
        raise HTTPException(422, f"photos: at most {MAX_PHOTOS}")
    read = []
    for photo in photos:
        data = await photo.read(limit + 1)
        kind = image_type(data)
        if len(data) > limit:
            raise HTTPException(413, f"photos: {photo.filename} is larger than {limit} bytes")
        if kind is None:
            raise HTTPException(415, "photos: only JPEG and PNG images are accepted (checked by content, not name)")
        read.append((kind, data))
    return read


PhotoFiles = Annotated[list[UploadFile], File(description="JPEG or PNG pictures.")]
MorePhotos = Annotated[list[UploadFile] | None, File(description="JPEG or PNG pictures, if any.")]
StepNote = Annotated[str, Form(max_length=2000, description="What the desk did or saw.")]


@router.post(
    "/{case_id}/rectify",
    summary="Record the rectification, with photos (multipart)",
    responses={**STEP_REFUSALS, 413: refusal("a photo too large"), 415: refusal("a photo not JPEG or PNG")},
)
async def rectify(
    pool: Pool, settings: Settings, who: Actor, case_id: UUID, photos: PhotoFiles, note: StepNote = ""
) -> CaseDetail:
    read = await _photos(photos, settings.report_max_bytes)
    return await _step(pool, who, case_id, "rectify", StepIn(note=note), read)


@router.post(
    "/{case_id}/recheck",
    summary="Record the recheck (multipart, photos optional); a camera-detected case gets the camera's picture",
    responses={**STEP_REFUSALS, 413: refusal("a photo too large"), 415: refusal("a photo not JPEG or PNG")},
)
async def recheck(
    pool: Pool, settings: Settings, who: Actor, case_id: UUID, note: StepNote = "", photos: MorePhotos = None
) -> CaseDetail:
    read = await _photos(photos or [], settings.report_max_bytes)
    detail = await _step(pool, who, case_id, "recheck", StepIn(note=note), read)
    return detail.model_copy(update={"picture": "requested" if detail.case.camera else None})


@router.post("/{case_id}/close", summary="Close the case (after its recheck)", responses=STEP_REFUSALS)
async def close(pool: Pool, who: Actor, case_id: UUID, body: Note | None = None) -> CaseDetail:
    return await _step(pool, who, case_id, "close", StepIn(note=body.note if body else ""))


@router.post("/{case_id}/reopen", summary="Reopen a rechecked or closed case", responses=STEP_REFUSALS)
async def reopen(pool: Pool, who: Actor, case_id: UUID, body: Note | None = None) -> CaseDetail:
    return await _step(pool, who, case_id, "reopen", StepIn(note=body.note if body else ""))

"""Listings a participant pages through: its training jobs and its consents.

Both are newest first, a page at a time: at most ``limit`` rows ordered by
(``created_at``, ``id``) descending, and the next page is the rows after the last
one shown, named by its id (``before``). The cursor is looked up among the rows the
caller may see, so an id of someone else's job or consent is refused like an unknown
one (422 naming ``before``) and tells the caller nothing about it. It is looked up
under that visibility alone, not under the page's filters (``status``, ``uscc``): a
job that finished between two pages of ``status=training`` still marks where the
next page starts, it just is not on it.

Who sees what is decided here, once for each listing, not in the routes:

* training jobs: a bureau its own, an operator every bureau's, anyone else nothing;
* consents: a bank or bureau those granted to it, an enterprise those it granted,
  an operator all of them (it can already read and revoke any one), a department or
  a regulator nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Response
from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, SQLModel, col, select

from creditshare.coordinator._db import ConsentRow, Participant, TrainingJobRow
from creditshare.coordinator._participants import Role
from creditshare.errors import InvalidInputError, PermissionDeniedError

__all__ = [
    "DEFAULT_LIMIT",
    "JOB_STATUSES",
    "MAX_LIMIT",
    "PAGED",
    "Cursor",
    "JobStatus",
    "PageLimit",
    "UnknownCursorError",
    "consents_for",
    "jobs_for",
    "next_page",
]

#: Rows per page unless asked otherwise, and the most one page may hold.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
JobStatus = Literal["aligning", "training", "finished", "failed", "cancelled"]
JOB_STATUSES: tuple[str, ...] = ("aligning", "training", "finished", "failed", "cancelled")

Row = TypeVar("Row", bound=SQLModel)

PageLimit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="the most items in this page (at most 1000)")
]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the id of the last item of the previous page: the items after it",
    ),
]


#: The OpenAPI description of a listing's 200 response: the ``Link`` header ``next_page``
#: sets (a route passes it as ``responses=PAGED``).
PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Link": {
                "description": "only on a full page: `<path?...&limit=n&before=<the last "
                'item\'s id>>; rel="next"` (RFC 8288), the next page with the same filters; '
                "absent on the last page",
                "required": False,
                "schema": {"type": "string"},
            }
        }
    }
}


def next_page(
    response: Response, path: str, rows: list[Any], limit: int, **params: str | None
) -> None:
    """A full page may have a next one: say where, in a ``Link: <...>; rel="next"`` header
    (RFC 8288). A shorter page is the last."""
    if rows and len(rows) == limit:
        query = {k: v for k, v in params.items() if v is not None}
        query |= {"limit": str(limit), "before": str(rows[-1].id)}
        response.headers["Link"] = f'<{path}?{urlencode(query)}>; rel="next"'


class UnknownCursorError(InvalidInputError):
    """A ``before`` cursor that names no row of the caller's listing."""

    field = "before"


def _page(
    engine: Engine,
    model: type[Row],
    visible: list[ColumnElement[bool]],
    filters: list[ColumnElement[bool]],
    limit: int,
    before: str | None,
    what: str,
) -> list[Row]:
    """One page of ``model``'s rows the caller may see (``visible``) that match
    ``filters``, newest first, after ``before``.

    The cursor is found under ``visible`` only: the filters may have stopped matching
    it since the page before (a job's status moves on), and the position of a row
    the caller may see is still a valid place to resume."""
    table: Any = model
    created, ident = col(table.created_at), col(table.id)
    with Session(engine) as session:
        query = select(model).where(*visible, *filters)
        if before is not None:
            anchor: Any = session.exec(select(model).where(*visible, ident == before)).first()
            if anchor is None:
                raise UnknownCursorError(
                    f"before: {before[:64]!r} is not one of the {what} you may list "
                    "(give the id of the last item of the page before)"
                )
            query = query.where(
                or_(
                    created < anchor.created_at,
                    and_(created == anchor.created_at, ident < anchor.id),
                )
            )
        rows = session.exec(query.order_by(created.desc(), ident.desc()).limit(limit))
        return list(rows)


def jobs_for(
    engine: Engine,
    viewer: Participant,
    status: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before: str | None = None,
) -> list[TrainingJobRow]:
    """The training jobs ``viewer`` may see (a bureau its own, an operator all)."""
    visible: list[ColumnElement[bool]] = []
    filters: list[ColumnElement[bool]] = []
    if viewer.role == Role.BUREAU:
        visible.append(col(TrainingJobRow.bureau) == viewer.id)
    elif viewer.role != Role.OPERATOR:
        raise PermissionDeniedError(
            f"role {viewer.role} has no training jobs (a bureau lists its own, an operator all)"
        )
    if status is not None:
        if status not in JOB_STATUSES:  # the route's schema refuses it first
            raise InvalidInputError(f"status: expected one of {', '.join(JOB_STATUSES)}")
        filters.append(col(TrainingJobRow.status) == status)
    return _page(engine, TrainingJobRow, visible, filters, limit, before, "training jobs")


def consents_for(
    engine: Engine,
    viewer: Participant,
    uscc: str | None = None,
    limit: int = DEFAULT_LIMIT,
    before: str | None = None,
) -> list[ConsentRow]:
    """The consents ``viewer`` holds or granted (an operator: all), optionally only
    those about one enterprise (``uscc``, already checked)."""
    visible: list[ColumnElement[bool]] = []
    filters: list[ColumnElement[bool]] = []
    if viewer.role in (Role.BANK, Role.BUREAU):
        visible.append(col(ConsentRow.grantee) == viewer.id)
    elif viewer.role == Role.ENTERPRISE:
        visible.append(col(ConsentRow.uscc) == (viewer.uscc or ""))
    elif viewer.role != Role.OPERATOR:
        raise PermissionDeniedError(
            f"role {viewer.role} holds no consents (banks and bureaus list those granted to "
            "them, enterprises those they granted, operators all)"
        )
    if uscc is not None:
        filters.append(col(ConsentRow.uscc) == uscc)
    return _page(engine, ConsentRow, visible, filters, limit, before, "consents")

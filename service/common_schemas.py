"""What every schema module of the OpenAPI document builds on: the strict base and the error answer.

StrictSchema is the base of every body and query schema (service/create_schemas.py,
task_schemas.py, dashboard_schemas.py), so an unknown field is an error and the document says
additionalProperties: false; ErrorSchema is the answer of every error of every route
(service/openapi.py declares it on each).
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields


class StrictSchema(Schema):
    """Unknown fields are errors (and the document says additionalProperties: false)."""

    class Meta:
        unknown = RAISE


class ErrorSchema(Schema):
    """Every error: a message, and for 422 the offending fields."""

    error = fields.String(required=True)
    fields_ = fields.Dict(
        data_key="fields", keys=fields.String(), values=fields.List(fields.String())
    )

"""Whole model instances from one plain SELECT whose text is built once per process.

For the reads every request makes before its own work (the session's user, the API token's):
there the ORM took longer to build and compile its select_related query than the database took
to answer it. Each model's columns are selected in field order, and a row is turned back into
instances exactly as the ORM does: the backend's and the fields' converters, then
``Model.from_db``.
"""

import functools
from typing import Any

from django.db import connection
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The model's table name, quoted for the connection's database."""
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], name: str) -> str:
    """The column of the model's field `name`, quoted for the connection's database."""
    return connection.ops.quote_name(model._meta.get_field(name).column)


def select_list(model: type[Model], alias: str) -> str:
    """`alias`."column", … for every concrete field of `model`, in the order from_row reads."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields)


@functools.cache
def _converters(model: type[Model]) -> list[tuple[list, Any]]:
    converted = []
    for field in model._meta.concrete_fields:
        column = field.get_col(model._meta.db_table)
        converted.append(
            (connection.ops.get_db_converters(column) + field.get_db_converters(connection), column)
        )
    return converted


def from_rows(values: tuple | list, *models: type[Model]) -> list[Model | None]:
    """Split a row of select_list(models[0], …), select_list(models[1], …), … into one instance
    per model; None for a model whose columns are all NULL (an outer join that found no row)."""
    instances, start = [], 0
    for model in models:
        width = len(model._meta.concrete_fields)
        part = list(values[start : start + width])
        start += width
        if all(value is None for value in part):
            instances.append(None)
            continue
        for index, (converters, column) in enumerate(_converters(model)):
            for convert in converters:
                part[index] = convert(part[index], column, connection)
        instances.append(model.from_db(connection.alias, None, part))
    return instances

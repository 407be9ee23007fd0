"""/healthz: is this process able to serve? Checks the database and the task broker."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.models import OrmQ


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        return False


def _broker_ok() -> tuple[bool, int | None]:
    # The ORM broker is a table on the main database: if we can count it, tasks can be queued.
    try:
        return True, OrmQ.objects.count()
    except Exception:
        return False, None


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    database = _database_ok()
    broker, queued = _broker_ok() if database else (False, None)
    down = [name for name, ok in (("database", database), ("task broker", broker)) if not ok]
    body = {
        "status": "ok" if not down else "unavailable",
        "database": "ok" if database else "down",
        "task_broker": "ok" if broker else "down",
        "queued_tasks": queued,
    }
    if down:
        body["down"] = down
    return JsonResponse(body, status=503 if down else 200)

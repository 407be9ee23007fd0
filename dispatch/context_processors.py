from django.conf import settings
from django.http import HttpRequest

from dispatch.selectors import membership_for


def portal(request: HttpRequest) -> dict:
    membership = membership_for(getattr(request, "user", None))
    return {
        "membership": membership,
        "current_organization": membership.organization if membership else None,
        "map_tile_url": settings.MAP_TILE_URL,
        "map_tile_attribution": settings.MAP_TILE_ATTRIBUTION,
    }

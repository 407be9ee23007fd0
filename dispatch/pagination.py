"""The API's page class (its own module: DRF imports it while loading rest_framework.generics)."""

from rest_framework.pagination import PageNumberPagination


class StablePagination(PageNumberPagination):
    """`?page=` and `?page_size=` (at most 200). Every list's ordering ends on a unique key, so
    while nothing changes a row is never on two pages, nor on none."""

    page_size_query_param = "page_size"
    max_page_size = 200

import pytest

from dispatch.models import Membership
from tests.factories import DepotFactory, DriverFactory, MembershipFactory, OrganizationFactory


@pytest.fixture(autouse=True)
def _test_settings(settings, tmp_path):
    # No collectstatic in tests, media in a throw-away folder, no HTTPS redirect on the test client.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SECURE_SSL_REDIRECT = False
    # Real hashing costs ~0.1 s a user; tests create hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def org(db):
    return OrganizationFactory(name="Kreuzberg Kurier", slug="kk")


@pytest.fixture
def other_org(db):
    return OrganizationFactory(name="Other Carrier", slug="other")


@pytest.fixture
def depot(org):
    return DepotFactory(organization=org, name="Kreuzberg depot")


@pytest.fixture
def dispatcher(org):
    return MembershipFactory(organization=org, role=Membership.Role.DISPATCHER, user__username="disp").user


@pytest.fixture
def org_admin(org):
    return MembershipFactory(organization=org, role=Membership.Role.ADMIN, user__username="orgadmin").user


@pytest.fixture
def other_dispatcher(other_org):
    return MembershipFactory(
        organization=other_org, role=Membership.Role.DISPATCHER, user__username="rival"
    ).user


@pytest.fixture
def driver(org):
    return DriverFactory(organization=org, user__username="driver1")


@pytest.fixture
def dispatcher_client(client, dispatcher):
    client.force_login(dispatcher)
    return client

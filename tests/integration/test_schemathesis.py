"""schemathesis against the wrapper's and the model server's OpenAPI: no 5xx, no schema violation.

Every check, positive and negative data, a bounded and derandomized number of examples per operation
(reproducible in CI), against real servers on 127.0.0.1 (the sim engine with zero latency).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labkit.config import DEFAULT_MODEL_NAME
from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings
from labkit.services.wrapper import WrapperSettings, create_app
from tests.test_wrapper import serving

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "schemathesis-admin-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
BOUNDED = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    settings_ = ModelServerSettings(port=0, engine="sim", sim_ttft_s=0, sim_itl_s=0, sim_jitter=0)
    with BackgroundModelServer(settings_) as server:
        yield server.url


API_KEY = "schemathesis-api-key"


@pytest.fixture(scope="module")
def wrapper_settings(model_url: str, tmp_path_factory: pytest.TempPathFactory) -> WrapperSettings:
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "admin-token").write_text(ADMIN_TOKEN)
    (secrets / "api-key").write_text(API_KEY)
    for path in secrets.iterdir():
        path.chmod(0o600)
    return WrapperSettings(
        backend_url=model_url,
        model=DEFAULT_MODEL_NAME,
        max_tokens_limit=32,
        max_prompt_chars=2000,
        admin_token_file=secrets / "admin-token",
        api_key_file=secrets / "api-key",
    )


@pytest.fixture(scope="module")
def wrapper_url(wrapper_settings: WrapperSettings) -> Iterator[str]:
    """The wrapper that /generate is tested on; no fault is ever injected into it."""
    with serving(create_app(wrapper_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def admin_wrapper_url(wrapper_settings: WrapperSettings) -> Iterator[str]:
    """A second wrapper for the admin API: the faults schemathesis injects must not slow /generate."""
    with serving(create_app(wrapper_settings)) as url:
        yield url


def _schema(url: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    # The secrets are the test's own; a report that hides `max_tokens` (it says "token") does not help.
    schema.config.output.sanitization.enabled = False
    return schema


@pytest.fixture(scope="module")
def wrapper_schema(wrapper_url: str) -> schemathesis.BaseSchema:
    return _schema(wrapper_url)


@pytest.fixture(scope="module")
def model_schema(model_url: str) -> schemathesis.BaseSchema:
    return _schema(model_url)


wrapper_api = schemathesis.pytest.from_fixture("wrapper_schema")
model_api = schemathesis.pytest.from_fixture("model_schema")


@wrapper_api.exclude(path_regex="^/admin/").parametrize()
@BOUNDED
def test_wrapper_public_api_with_the_api_key(case: schemathesis.Case, wrapper_url: str) -> None:
    case.call_and_validate(base_url=wrapper_url, headers={"X-API-Key": API_KEY}, checks=CHECKS, timeout=10)


@wrapper_api.include(path_regex="^/admin/").parametrize()
@BOUNDED
def test_wrapper_admin_api_with_the_token(case: schemathesis.Case, admin_wrapper_url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(base_url=admin_wrapper_url, headers=headers, checks=CHECKS, timeout=10)


@wrapper_api.parametrize()
@BOUNDED
def test_wrapper_without_credentials(case: schemathesis.Case, wrapper_url: str) -> None:
    case.call_and_validate(base_url=wrapper_url, checks=CHECKS, timeout=10)


# /v1/embeddings checks a body as documented, then refuses every valid one with a 400 (no engine embeds:
# docs/openai.md), so "a valid body is accepted" cannot hold there; every other check does.
REFUSING_CHECKS = [check for check in CHECKS if check is not positive_data_acceptance]


@model_api.parametrize()
@BOUNDED
def test_model_server(case: schemathesis.Case, model_url: str) -> None:
    checks = REFUSING_CHECKS if case.operation.path == "/v1/embeddings" else CHECKS
    case.call_and_validate(base_url=model_url, checks=checks, timeout=10)

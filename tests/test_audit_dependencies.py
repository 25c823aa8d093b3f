"""`.ci/audit_dependencies.py`, `make audit`'s fallback: its verdicts on canned PyPI project pages, and its
fetching (404, retry after a 503) against a loopback server standing in for PyPI."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import reply_json

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "audit_dependencies.py"


def _load_script() -> ModuleType:
    # The script is no package; registering it first lets its dataclasses resolve their own module.
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


audit = _load_script()


def vuln(
    id: str, *, fixed_in: list[str], aliases: list[str] | None = None, withdrawn: str | None = None
) -> dict[str, Any]:
    return {
        "id": id,
        "aliases": aliases or [],
        "fixed_in": fixed_in,
        "withdrawn": withdrawn,
        "details": "canned",
        "link": f"https://osv.dev/vulnerability/{id}",
        "source": "osv",
        "summary": None,
    }


def page(latest: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    return {
        "info": {"name": "demo", "version": latest},
        "releases": {latest: []},
        "vulnerabilities": list(vulns),
    }


def assess(installed: str, project: dict[str, Any], ignore: tuple[str, ...] = ()) -> Any:
    return audit.assess_package(audit.InstalledPackage("demo", installed), project, ignore)


def finding_ids(result: Any) -> list[str]:
    return [a.id for a in result.findings]


def test_latest_with_a_vulnerability_is_a_finding() -> None:
    result = assess("2.0.0", page("2.0.0", vuln("GHSA-aaaa", fixed_in=[], aliases=["CVE-2026-1"])))
    assert result.coverage is audit.Coverage.FULL
    assert finding_ids(result) == ["GHSA-aaaa"]
    assert result.findings[0].aliases == ("CVE-2026-1",)


def test_latest_without_vulnerabilities_is_clean_and_fully_audited() -> None:
    result = assess("2.0", page("2.0.0"))
    assert result.coverage is audit.Coverage.FULL
    assert result.findings == []


def test_older_with_a_fix_newer_than_installed_is_a_finding() -> None:
    result = assess("1.0.0", page("2.0.0", vuln("PYSEC-1", fixed_in=["2.0.1"])))
    assert result.coverage is audit.Coverage.PARTIAL
    assert finding_ids(result) == ["PYSEC-1"]


def test_older_with_every_fix_at_or_below_installed_is_clean() -> None:
    project = page("2.0.0", vuln("PYSEC-1", fixed_in=["1.5.0"]), vuln("PYSEC-2", fixed_in=["1.4.9", "1.5.0"]))
    result = assess("1.5.0", project)
    assert result.coverage is audit.Coverage.PARTIAL
    assert result.findings == []


def test_older_with_no_fixed_release_is_a_finding() -> None:
    # The latest is affected and nothing fixes it: an older release has no reason to be safe.
    assert finding_ids(assess("1.0.0", page("2.0.0", vuln("GHSA-nofix", fixed_in=[])))) == ["GHSA-nofix"]


def test_a_backport_in_our_series_counts_as_fixed_one_in_another_series_does_not() -> None:
    project = page("2.1.0", vuln("GHSA-bp", fixed_in=["1.2.5", "2.1.1"]))
    assert assess("1.2.6", project).findings == []
    assert finding_ids(assess("2.0.0", project)) == ["GHSA-bp"]


def test_withdrawn_advisories_are_ignored() -> None:
    project = page("2.0.0", vuln("GHSA-gone", fixed_in=[], withdrawn="2026-01-02T00:00:00Z"))
    assert assess("2.0.0", project).findings == []
    assert assess("1.0.0", project).findings == []


def test_the_same_advisory_under_two_ids_is_one_finding() -> None:
    project = page(
        "5.6.3",
        vuln("GHSA-w8v5", fixed_in=[], aliases=["CVE-2025-69872", "PYSEC-2026-2447"]),
        vuln("PYSEC-2026-2447", fixed_in=[], aliases=["CVE-2025-69872", "GHSA-w8v5"]),
    )
    assert finding_ids(assess("5.6.3", project)) == ["GHSA-w8v5"]


def test_the_ignore_list_matches_an_id_or_an_alias_and_keeps_what_it_ignored() -> None:
    project = page(
        "2.0.0",
        vuln("GHSA-one", fixed_in=[], aliases=["CVE-2026-1"]),
        vuln("GHSA-two", fixed_in=["2.0.1"]),
        vuln("GHSA-three", fixed_in=[]),
    )
    result = assess("2.0.0", project, ignore=("CVE-2026-1", "GHSA-two"))
    assert finding_ids(result) == ["GHSA-three"]
    assert [a.id for a in result.ignored] == ["GHSA-one", "GHSA-two"]


def test_a_version_that_does_not_parse_is_not_audited() -> None:
    result = assess("not-a-version", page("2.0.0", vuln("GHSA-x", fixed_in=[])))
    assert result.coverage is audit.Coverage.NOT_AUDITED
    assert result.findings == []


def test_the_summary_counts_each_kind_and_says_the_partial_check_is_partial() -> None:
    fetched = [
        audit.Fetched(audit.InstalledPackage("full", "2.0"), page("2.0", vuln("GHSA-f", fixed_in=[]))),
        audit.Fetched(audit.InstalledPackage("old", "1.0"), page("2.0")),
        audit.Fetched(
            audit.InstalledPackage("private", "0.1"), None, not_found=True, error="not on PyPI (404)"
        ),
    ]
    text = audit.report(audit.assess_all(fetched), editable=["labkit"])
    assert "FINDING full 2.0 (latest release): GHSA-f" in text
    assert "not audited: private 0.1: not on PyPI (404)" in text
    assert (
        "3 packages: 1 audited fully (at their latest release), 1 partially (older than latest), "
        "1 not audited; findings: 1 (in 1 packages); skipped as editable: labkit"
    ) in text
    assert "partial check" in text and "old 1.0 < 2.0" in text


class _FakePyPI(BaseHTTPRequestHandler):
    """Loopback stand-in for PyPI: `good` answers, `missing` is 404, `flaky` fails once with 503."""

    flaky_failures = 1

    def do_GET(self) -> None:
        name = self.path.split("/")[2]
        if name == "flaky" and _FakePyPI.flaky_failures > 0:
            _FakePyPI.flaky_failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        if name == "missing":
            self.send_response(404)
            self.end_headers()
            return
        reply_json(self, page("1.0", vuln("GHSA-served", fixed_in=[])))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_pypi(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePyPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        monkeypatch.setattr(audit, "PYPI_PROJECT_URL", f"http://{host!s}:{port}/pypi/{{name}}/json")
        monkeypatch.setattr(audit, "RETRY_BASE_DELAY_S", 0.01)
        monkeypatch.setattr(audit, "TIMEOUT_S", 5.0)
        _FakePyPI.flaky_failures = 1
        # A proxy from the environment must not carry loopback requests elsewhere.
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetching_reads_pages_lists_404s_and_retries_a_server_error(fake_pypi: None) -> None:
    packages = [audit.InstalledPackage(n, "1.0") for n in ("good", "missing", "flaky")]
    fetched = {f.package.name: f for f in asyncio.run(audit.fetch_pages(packages))}
    assert fetched["good"].page is not None
    assert fetched["missing"].page is None and fetched["missing"].not_found
    assert fetched["flaky"].page is not None
    results = {a.package.name: a for a in audit.assess_all(list(fetched.values()))}
    assert [a.id for a in results["good"].findings] == ["GHSA-served"]
    assert results["missing"].coverage is audit.Coverage.NOT_AUDITED

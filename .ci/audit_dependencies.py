"""Known vulnerabilities in the installed packages, from PyPI's per-project JSON (`make audit`'s fallback).

pip-audit asks PyPI's per-release JSON or OSV; where neither answers (CI's network) this asks the one
endpoint that does, `https://pypi.org/pypi/<name>/json`. Its `vulnerabilities` list is the advisories
that affect the project's *latest* release only, so this check is complete for a package installed at
its latest release and partial for an older one: an advisory that affects our version but not the latest
(fixed in a release between ours and the latest) is not on that page and cannot be seen here.

Decision per package (see `assess_package`):
- installed == latest: every advisory on the page (withdrawn ones aside) affects it: a finding.
- installed older (or newer, a pre-release) than latest: an advisory on the page affects the latest, and
  ours too unless ours carries one of its fixes. It is a finding when a fixed_in version is newer than
  ours and none at or below ours belongs to our release series (major.minor, i.e. a backport we have);
  when every fixed_in is at or below ours, ours is fixed; an advisory with no fixed_in at all is a finding
  (the latest is affected and nothing says ours is not).
- not on PyPI (404): not audited, and listed.

Run with the virtual environment's interpreter: `.venv/bin/python .ci/audit_dependencies.py [--ignore ID]`.
Exit status: 1 on findings, 2 when PyPI answered none of the requests, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import importlib.metadata
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PYPI_PROJECT_URL = "https://pypi.org/pypi/{name}/json"
CONCURRENCY = 8
TIMEOUT_S = 15.0
ATTEMPTS = 3
RETRY_BASE_DELAY_S = 1.0


@dataclass(frozen=True)
class InstalledPackage:
    name: str  # canonical (PEP 503) name
    version: str


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]

    def names(self) -> set[str]:
        return {self.id, *self.aliases}


class Coverage(enum.Enum):
    FULL = "full"  # installed == latest: the page lists every advisory that affects ours
    PARTIAL = "partial"  # installed != latest: only advisories that also affect the latest are visible
    NOT_AUDITED = "not audited"


@dataclass
class Assessment:
    package: InstalledPackage
    coverage: Coverage
    latest: str | None = None
    findings: list[Advisory] = field(default_factory=list)
    ignored: list[Advisory] = field(default_factory=list)
    reason: str = ""  # why a package was not audited


@dataclass(frozen=True)
class Fetched:
    """One project's answer: its JSON page, or None with the reason (`not_found` for PyPI's 404)."""

    package: InstalledPackage
    page: Mapping[str, Any] | None
    not_found: bool = False
    error: str = ""


def parse_advisories(page: Mapping[str, Any]) -> list[Advisory]:
    """The page's advisories that still stand, once each.

    Withdrawn ones are dropped; one advisory often comes twice (its GHSA and its PYSEC entry, each naming
    the other as an alias): the first is kept.
    """
    advisories: list[Advisory] = []
    seen: set[str] = set()
    for entry in page.get("vulnerabilities") or []:
        if entry.get("withdrawn"):
            continue
        advisory = Advisory(
            id=str(entry.get("id", "")),
            aliases=tuple(str(a) for a in entry.get("aliases") or []),
            fixed_in=tuple(str(v) for v in entry.get("fixed_in") or []),
        )
        if advisory.id in seen:
            continue
        seen |= advisory.names()
        advisories.append(advisory)
    return advisories


def _parse_versions(values: Iterable[str]) -> list[Version]:
    versions = []
    for value in values:
        try:
            versions.append(Version(value))
        except InvalidVersion:
            continue
    return versions


def affects_older_version(advisory: Advisory, installed: Version) -> bool:
    """Whether an advisory that affects the latest release also affects an installed non-latest one."""
    fixes = sorted(_parse_versions(advisory.fixed_in))
    if not fixes:
        return True
    newer = [f for f in fixes if f > installed]
    if not newer:
        return False
    ours_or_older = [f for f in fixes if f <= installed]
    # A fix at or below ours on another branch (fixed_in 1.2.5 and 2.1.1, ours 2.0.0) is not ours; one in
    # our own series (ours 1.2.6) is the backport we run.
    return not (ours_or_older and ours_or_older[-1].release[:2] == installed.release[:2])


def assess_package(
    package: InstalledPackage, page: Mapping[str, Any], ignore: Iterable[str] = ()
) -> Assessment:
    """Findings for one installed package from its PyPI project page."""
    ignore_set = set(ignore)
    latest_text = str((page.get("info") or {}).get("version") or "")
    try:
        installed = Version(package.version)
        latest = Version(latest_text)
    except InvalidVersion:
        return Assessment(
            package,
            Coverage.NOT_AUDITED,
            latest=latest_text or None,
            reason=f"version not comparable (installed {package.version!r}, latest {latest_text!r})",
        )
    coverage = Coverage.FULL if installed == latest else Coverage.PARTIAL
    assessment = Assessment(package, coverage, latest=latest_text)
    for advisory in parse_advisories(page):
        if coverage is Coverage.PARTIAL and not affects_older_version(advisory, installed):
            continue
        if advisory.names() & ignore_set:
            assessment.ignored.append(advisory)
        else:
            assessment.findings.append(advisory)
    return assessment


def installed_packages(exclude: Iterable[str] = ()) -> tuple[list[InstalledPackage], list[str]]:
    """Distributions on this interpreter's path, less editable ones (returned by name) and `exclude`."""
    excluded = {canonicalize_name(n) for n in exclude}
    packages: dict[str, InstalledPackage] = {}
    editable: set[str] = set()
    for dist in importlib.metadata.distributions():
        raw_name = dist.metadata["Name"]
        if not raw_name:
            continue
        name = canonicalize_name(raw_name)
        if name in excluded or name in packages:
            continue
        if _is_editable(dist):
            editable.add(name)
            continue
        packages[name] = InstalledPackage(name, dist.version)
    return sorted(packages.values(), key=lambda p: p.name), sorted(editable)


def _is_editable(dist: importlib.metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("dir_info", {}).get("editable"))
    except (ValueError, AttributeError):
        return False


async def _fetch_one(
    client: httpx.AsyncClient, semaphore: asyncio.Semaphore, package: InstalledPackage
) -> Fetched:
    url = PYPI_PROJECT_URL.format(name=package.name)
    error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(RETRY_BASE_DELAY_S * 2 ** (attempt - 1))
        async with semaphore:
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
        if response.status_code == 404:
            return Fetched(package, None, not_found=True, error="not on PyPI (404)")
        if response.status_code == 200:
            try:
                return Fetched(package, response.json())
            except ValueError:
                error = "PyPI answered 200 with a body that is not JSON"
                continue
        error = f"HTTP {response.status_code}"
    return Fetched(package, None, error=f"no answer from PyPI after {ATTEMPTS} attempts ({error})")


async def fetch_pages(packages: Sequence[InstalledPackage]) -> list[Fetched]:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    # trust_env stays on: a machine that reaches PyPI through a proxy names it in the environment.
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT_S),
        follow_redirects=True,
        headers={"Accept": "application/json", "User-Agent": "labkit-audit-dependencies"},
    ) as client:
        return list(await asyncio.gather(*(_fetch_one(client, semaphore, p) for p in packages)))


def assess_all(fetched: Sequence[Fetched], ignore: Iterable[str] = ()) -> list[Assessment]:
    ignore_list = list(ignore)
    results = []
    for item in fetched:
        if item.page is None:
            results.append(Assessment(item.package, Coverage.NOT_AUDITED, reason=item.error))
        else:
            results.append(assess_package(item.package, item.page, ignore_list))
    return results


def _describe(advisory: Advisory) -> str:
    aliases = f" ({', '.join(advisory.aliases)})" if advisory.aliases else ""
    fixed = ", ".join(advisory.fixed_in) if advisory.fixed_in else "no fixed release listed"
    return f"{advisory.id}{aliases}, fixed in: {fixed}"


def report(assessments: Sequence[Assessment], editable: Sequence[str]) -> str:
    lines = []
    findings = [a for a in assessments if a.findings]
    for a in findings:
        where = "latest release" if a.coverage is Coverage.FULL else f"latest is {a.latest}"
        for advisory in a.findings:
            lines.append(f"FINDING {a.package.name} {a.package.version} ({where}): {_describe(advisory)}")
    for a in assessments:
        for advisory in a.ignored:
            lines.append(f"ignored {a.package.name} {a.package.version}: {advisory.id} (--ignore)")
    not_audited = [a for a in assessments if a.coverage is Coverage.NOT_AUDITED]
    for a in not_audited:
        lines.append(f"not audited: {a.package.name} {a.package.version}: {a.reason}")
    full = sum(1 for a in assessments if a.coverage is Coverage.FULL)
    partial = sum(1 for a in assessments if a.coverage is Coverage.PARTIAL)
    partial_clean = [
        f"{a.package.name} {a.package.version} < {a.latest}"
        for a in assessments
        if a.coverage is Coverage.PARTIAL and not a.findings
    ]
    n_findings = sum(len(a.findings) for a in assessments)
    skipped = f"; skipped as editable: {', '.join(editable)}" if editable else ""
    lines.append(
        f"audit_dependencies: {len(assessments)} packages: {full} audited fully (at their latest release), "
        f"{partial} partially (older than latest), {len(not_audited)} not audited; "
        f"findings: {n_findings} (in {len(findings)} packages){skipped}"
    )
    if partial_clean:
        lines.append(
            f"audit_dependencies: {len(partial_clean)} packages are older than their latest release, with "
            "no advisory known against the latest page; a partial check: advisories that affect only "
            f"versions older than the latest are not listed there and are not visible to it: "
            f"{', '.join(partial_clean)}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="ID",
        help="an accepted advisory (its id or an alias); repeatable",
    )
    parser.add_argument(
        "--skip", action="append", default=[], metavar="NAME", help="a distribution not to audit"
    )
    args = parser.parse_args(argv)
    packages, editable = installed_packages(exclude=args.skip)
    if not packages:
        print("audit_dependencies: no installed distributions found", file=sys.stderr)
        return 2
    fetched = asyncio.run(fetch_pages(packages))
    # Every project 404 would mean a filter in the way, not a venv of unpublished packages.
    if all(item.page is None for item in fetched):
        print(
            f"audit_dependencies: PyPI could not be reached ({fetched[0].error}); "
            f"none of {len(packages)} packages was audited",
            file=sys.stderr,
        )
        return 2
    assessments = assess_all(fetched, args.ignore)
    print(report(assessments, editable))
    return 1 if any(a.findings for a in assessments) else 0


if __name__ == "__main__":
    sys.exit(main())

""".github/workflows/pages.yml publishes the book: on a push to main it runs the unit tests and builds with the
README's command (bash scripts/build_book.sh, warnings as errors), both with CPU-only torch, uploads _build/html as the
Pages artifact and deploys it, with the permissions Pages needs. (The workflow runs on GitHub only; this checks its
structure.)"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
JOBS = WORKFLOW["jobs"]


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(step: dict) -> str:
    return step.get("uses", "").split("@")[0]


def job_using(action: str) -> tuple[str, dict]:
    found = [(name, job) for name, job in JOBS.items() if any(uses(s) == action for s in steps(job))]
    assert len(found) == 1, f"pages.yml: one job should use {action}, found {[n for n, _ in found]}"
    return found[0]


def test_triggers_on_push_to_main():
    on = WORKFLOW.get("on", WORKFLOW.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "main" in on["push"]["branches"], on


def test_has_the_permissions_pages_needs():
    permissions = WORKFLOW.get("permissions", {})
    assert permissions.get("pages") == "write" and permissions.get("id-token") == "write", permissions


def test_builds_with_the_readme_command_then_uploads_the_html():
    name, job = job_using("actions/upload-pages-artifact")
    runs = [s.get("run", "") for s in steps(job)]
    build = next((i for i, r in enumerate(runs) if "bash scripts/build_book.sh" in r), None)
    assert build is not None, f"job {name}: no step runs bash scripts/build_book.sh"
    assert job.get("env", {}).get("KDTUTOR_TORCH_INDEX") == "https://download.pytorch.org/whl/cpu", (
        f"job {name}: the scripts should install CPU-only torch (KDTUTOR_TORCH_INDEX)")
    tests = next((i for i, r in enumerate(runs) if re.search(r"bash scripts/test\.sh\b", r)), None)
    assert tests is not None and tests < build, f"job {name}: the unit tests should run before the build"
    upload = next(i for i, s in enumerate(steps(job)) if uses(s) == "actions/upload-pages-artifact")
    assert upload > build and steps(job)[upload]["with"]["path"].rstrip("/") == "_build/html"
    assert any(uses(s) == "actions/configure-pages" for s in steps(job))


def test_deploys_the_uploaded_artifact():
    build, _ = job_using("actions/upload-pages-artifact")
    name, job = job_using("actions/deploy-pages")
    needs = job.get("needs", [])
    assert build in ([needs] if isinstance(needs, str) else needs), f"job {name} should need job {build}"
    assert job.get("environment", {}).get("name") == "github-pages"

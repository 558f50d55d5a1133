"""`make certs` writes where the stack and the tests read: deploy/certs of this checkout."""

from pathlib import Path

from tools import localca

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_default_certificate_folder_is_the_checkouts_deploy_certs() -> None:
    assert localca.DEFAULT_DIR == REPO_ROOT / "deploy" / "certs"
    assert (REPO_ROOT / "compose.yaml").is_file()

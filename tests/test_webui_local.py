"""The local Open WebUI (browser tier, ``make demo``) runs the image's release with the rendered Deployment's env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools import webui_local
from tools.render import Render
from workloads import openwebui, rayservice

SECRETS = {
    (openwebui.SECRET_NAME, openwebui.SECRET_KEY): "local-key",
    (rayservice.API_KEY_SECRET, rayservice.API_KEY_SECRET_KEY): "local-api-key",
}


def local(env: list[dict[str, Any]], tmp_path: Path) -> dict[str, str]:
    return webui_local.local_env(
        env,
        openai_url="http://127.0.0.1:1234/v1",
        data_dir=tmp_path / "data",
        home=tmp_path / "home",
        port=4321,
        secrets=SECRETS,
    )


def test_the_package_version_is_the_image_tag() -> None:
    assert openwebui.IMAGE.endswith(f":v{webui_local.version()}")
    assert webui_local.requirement() == f"open-webui=={webui_local.version()}"
    assert webui_local.version("ghcr.io/open-webui/open-webui:v1.2.3") == "1.2.3"


@pytest.mark.parametrize("image", ["ghcr.io/open-webui/open-webui:main", "ghcr.io/open-webui/open-webui"])
def test_an_image_without_a_release_tag_is_one_line(image: str) -> None:
    with pytest.raises(webui_local.WebUIError, match=r"^workloads\.openwebui\.IMAGE=.*allowed: <repository>:vX\.Y\.Z$"):
        webui_local.version(image)


def test_the_cli_prints_what_the_makefile_installs(capsys: pytest.CaptureFixture[str]) -> None:
    assert webui_local.main(["--version"]) == 0
    assert webui_local.main(["--requirement"]) == 0
    assert capsys.readouterr().out.split() == [webui_local.version(), webui_local.requirement()]


def test_local_env_is_the_deployments_with_only_the_local_keys_replaced(dev: Render, tmp_path: Path) -> None:
    container = webui_local.container(dev)
    env = local(container["env"], tmp_path)
    cluster = {e["name"]: e.get("value") for e in container["env"]}
    changed = {k for k in cluster if env[k] != cluster[k]}
    assert changed == {*webui_local.LOCAL_KEYS, openwebui.SECRET_KEY, "OPENAI_API_KEYS"}
    assert env["OPENAI_API_BASE_URLS"] == "http://127.0.0.1:1234/v1"
    assert env["DATA_DIR"] == str(tmp_path / "data") and env["PORT"] == "4321"
    assert env[openwebui.SECRET_KEY] == "local-key"
    assert env["OPENAI_API_KEYS"] == "local-api-key"  # the serve endpoint's key, from its Secret
    # Additions only: the image's own settings and the offline switches, none replacing the Deployment's.
    added = set(env) - set(cluster)
    assert added == set(webui_local.image_env(tmp_path / "data")) | set(webui_local.OFFLINE_ENV)
    assert env["OFFLINE_MODE"] == "true" and env["HF_HUB_OFFLINE"] == "1"
    assert json.loads(env["DEFAULT_MODEL_PARAMS"]) == {"function_calling": "legacy"}


def test_the_probe_paths_are_the_deployments(dev: Render) -> None:
    container = webui_local.container(dev)
    assert webui_local.probe_paths(dev) == [
        container["startupProbe"]["httpGet"]["path"],
        container["readinessProbe"]["httpGet"]["path"],
    ]


def test_a_deployment_without_a_local_key_is_refused(dev: Render, tmp_path: Path) -> None:
    env = [e for e in webui_local.container(dev)["env"] if e["name"] != "OPENAI_API_BASE_URLS"]
    with pytest.raises(webui_local.WebUIError, match="no OPENAI_API_BASE_URLS"):
        local(env, tmp_path)


def test_an_addition_never_replaces_a_deployment_setting(dev: Render, tmp_path: Path) -> None:
    env = [*webui_local.container(dev)["env"], {"name": "OFFLINE_MODE", "value": "false"}]
    with pytest.raises(webui_local.WebUIError, match="sets OFFLINE_MODE, which the local run would replace"):
        local(env, tmp_path)


def test_a_reference_without_a_local_value_is_refused(dev: Render, tmp_path: Path) -> None:
    ref = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}
    with pytest.raises(webui_local.WebUIError, match=r"Deployment env X: valueFrom .* has no local value"):
        local([*webui_local.container(dev)["env"], ref], tmp_path)


def test_a_venv_with_another_release_is_refused(tmp_path: Path) -> None:
    with pytest.raises(webui_local.WebUIError, match="no venv"):
        webui_local.check_venv(tmp_path / "venv-webui")

"""IMGQ_AI_REMOTE_ENDPOINTS and IMGQ_AI_REMOTE_TOKENS: read from the environment or the settings
file, refused at start-up with a message naming the setting and the model, and printed without
the tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imgq.ai.remote import replicate_input
from imgq.config import SettingsError, as_environment, load_settings
from imgq.domain.pipeline import StepSpec
from imgq.ops import build_registry
from imgq.ops.ai_support import AIConfig
from imgq.ops.remote import serving

GPU = {"operation": "upscale", "kind": "imgq", "url": "http://gpu.internal:8000",
       "token": "gpu", "model": "realesrgan-x4plus"}
SDXL = {"operation": "generate", "kind": "replicate", "model": "stability-ai/sdxl",
        "token": "replicate"}
TOKENS = {"gpu": "imgq_0123456789abcdef", "replicate": "r8_secret_value"}


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_SETTINGS_FILE", str(tmp_path / "absent.toml"))


def _load(endpoints: dict[str, Any], tokens: dict[str, str] | None = None) -> Any:
    return load_settings(ai_remote_endpoints=json.dumps(endpoints),
                         ai_remote_tokens=json.dumps(TOKENS if tokens is None else tokens))


def _refused(endpoints: dict[str, Any], tokens: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as refused:
        _load(endpoints, tokens)
    return str(refused.value)


def test_endpoints_are_read_and_printed_without_their_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load({"gpu-x4": GPU, "sdxl": SDXL})
    assert settings.ai_remote_endpoints["sdxl"].url == "https://api.replicate.com/v1"
    assert settings.remote_tokens() == TOKENS
    printed = "\n".join(as_environment(settings))
    assert "r8_secret_value" not in printed and "imgq_0123456789abcdef" not in printed
    assert "# IMGQ_AI_REMOTE_TOKENS=<set, hidden>" in printed
    line = next(x for x in printed.splitlines() if x.startswith("IMGQ_AI_REMOTE_ENDPOINTS="))
    monkeypatch.setenv("IMGQ_AI_REMOTE_ENDPOINTS", line.partition("=")[2])
    monkeypatch.setenv("IMGQ_AI_REMOTE_TOKENS", json.dumps(TOKENS))
    assert load_settings().ai_remote_endpoints == settings.ai_remote_endpoints


def test_endpoints_and_tokens_are_read_as_tables_of_the_settings_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / ".secrets.toml"
    secrets.write_text(
        '[ai_remote_endpoints.gpu-x4]\noperation = "upscale"\nkind = "imgq"\n'
        'url = "http://gpu.internal:8000"\ntoken = "gpu"\nscale = 4\n\n'
        '[ai_remote_tokens]\ngpu = "imgq_0123456789abcdef"\n')
    monkeypatch.setenv("IMGQ_SETTINGS_FILE", str(secrets))
    settings = load_settings()
    assert settings.ai_remote_endpoints["gpu-x4"].url == "http://gpu.internal:8000"
    assert settings.remote_tokens() == {"gpu": "imgq_0123456789abcdef"}


@pytest.mark.parametrize(("endpoints", "tokens", "says"), [
    ({"gpu-x4": {**GPU, "token": "gpu-box"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS: gpu-x4 names token 'gpu-box', which IMGQ_AI_REMOTE_TOKENS "
     "does not have (its names: gpu, replicate)"),
    ({"gpu-x4": {**GPU, "url": "ftp://gpu.internal"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS.gpu-x4: url must be an http(s) URL of the imgq endpoint"),
    ({"gpu-x4": {**GPU, "url": "http://me:pw@gpu.internal"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS.gpu-x4: url must not carry a user or password"),
    ({"gpu-x4": {**GPU, "kind": "runpod"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS.gpu-x4.kind: Input should be 'imgq' or 'replicate'"),
    ({"gpu-x4": {**GPU, "operation": "upscal"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS.gpu-x4.operation: Input should be 'upscale'"),
    ({"gpu-x4": {**GPU, "timeout": 3}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS.gpu-x4.timeout: Extra inputs are not permitted"),
    ({"sdxl": {**SDXL, "model": "sdxl"}}, None,
     "a replicate endpoint needs version (a version id) or model (owner/name)"),
    ({"sdxl": {**SDXL, "token": ""}}, None, "a replicate endpoint needs token"),
    ({"a": {**GPU, "operation": "remove_background"},
      "b": {**GPU, "operation": "remove_background"}}, None,
     "IMGQ_AI_REMOTE_ENDPOINTS: a and b both serve remove_background, which has no model "
     "parameter to choose between them; keep one"),
    ({"gpu-x4": GPU}, {"gpu": ""},
     "IMGQ_AI_REMOTE_TOKENS: must map each token name to a non-empty string"),
])
def test_a_bad_endpoint_is_refused_naming_the_setting_and_the_model(
        endpoints: dict[str, Any], tokens: dict[str, str] | None, says: str) -> None:
    message = _refused(endpoints, tokens)
    assert says in message
    assert "r8_secret_value" not in message and "imgq_0123456789abcdef" not in message


def test_endpoints_that_are_not_json_are_refused_with_where() -> None:
    with pytest.raises(SettingsError, match="IMGQ_AI_REMOTE_ENDPOINTS: .*not a JSON object of "
                                            "model name to endpoint"):
        load_settings(ai_remote_endpoints="{gpu-x4: 1}")


def test_a_remote_model_is_offered_without_local_weights_and_only_it_goes_remote() -> None:
    settings = _load({"gpu-x4": GPU, "sdxl": SDXL})
    registry = build_registry(settings)
    upscale = registry.get("upscale")
    assert upscale.remote_models == {"gpu-x4": "imgq at http://gpu.internal:8000 "
                                               "(realesrgan-x4plus)"}
    step = registry.bind([StepSpec(op="upscale", params={"model": "gpu-x4", "scale": 4})])[0]
    assert step.params.model == "gpu-x4"  # type: ignore[attr-defined]
    config = AIConfig.from_settings(settings)
    assert serving(config, "upscale", "gpu-x4") is not None
    assert serving(config, "upscale", "realesrgan-x4plus") is None  # the local one stays local
    generate = registry.get("generate")
    assert generate.unavailable_reason is None  # no checkpoint here, but a remote model
    assert generate.remote_models == {"sdxl": "replicate at https://api.replicate.com "
                                              "(stability-ai/sdxl)"}


def test_a_replicate_input_naming_what_the_step_has_not_is_refused_at_start_up() -> None:
    settings = _load({"sdxl": {**SDXL, "input": {"prompt": "{prompt}", "cfg": "{cfg_scale}",
                                                 "init": "{image}"}}})
    with pytest.raises(SettingsError) as refused:
        build_registry(settings)
    message = str(refused.value)
    assert "IMGQ_AI_REMOTE_ENDPOINTS.sdxl.input: {cfg_scale}, {image} is not something a " \
           "generate step has" in message
    assert "{guidance}" in message  # what it does have


def test_the_replicate_input_keeps_values_leaves_out_missing_ones_and_formats_strings() -> None:
    template = {"image": "{image}", "scale": "{scale}", "seed": "{seed}",
                "prompt": "a painting of {prompt}", "face_enhance": True, "note": "plain"}
    values = {"image": "data:image/png;base64,AAAA", "scale": 2, "seed": None,
              "prompt": "a fox"}
    assert replicate_input(template, values) == {
        "image": "data:image/png;base64,AAAA", "scale": 2, "prompt": "a painting of a fox",
        "face_enhance": True, "note": "plain"}

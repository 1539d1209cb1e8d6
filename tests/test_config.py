"""Node configs: the example is valid, and every mistake names its line and field."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import edge.config
from alerts.core.config import ConfigModel
from edge.config import ConfigError, NodeConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "node.example.yaml"

GOOD = """\
node_id: n1
site:
  id: s1
  sub_district: sd
  community: c
  grid: g
sensors:
  - id: smoke-1
    adapter: zigbee2mqtt
    topic: zigbee2mqtt/smoke-1
"""


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.site.id == "willow-court"
    assert [s.adapter for s in config.sensors] == ["zigbee2mqtt", "zigbee2mqtt", "tasmota", "native"]
    assert config.site.place("smoke-b3-stair").community == "east-gate"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("adapter: zigbee2mqtt", "adapter: zigbee3mqtt"),
            "node.yaml:9: sensors.0.adapter: Input should be",
        ),
        (GOOD.replace("  grid: g\n", ""), "node.yaml:2: site.grid: Field required"),
        (GOOD.replace("id: s1", "id: s/1"), "node.yaml:3: site.id: String should match pattern"),
        (GOOD.replace("topic: zigbee2mqtt/smoke-1", "topic: zigbee2mqtt/#"), "node.yaml:10: sensors.0.topic: a sensor"),
        (GOOD + "colour: blue\n", "node.yaml:11: colour: Extra inputs are not permitted"),
        (GOOD.replace("  grid: g\n", "  grid: [g\n"), "node.yaml:7: not valid YAML"),
        ("- just\n- a list\n", "node.yaml:1: the config must be a mapping"),
    ],
)
def test_a_bad_config_names_the_line_and_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "node.yaml")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_sensor_ids_and_topics_must_be_unique() -> None:
    twice = GOOD + "  - id: smoke-1\n    adapter: zigbee2mqtt\n    topic: zigbee2mqtt/smoke-2\n"
    with pytest.raises(ConfigError, match=r"node.yaml:7: sensors: sensor ids must be unique; repeated: smoke-1"):
        parse_config(twice, "node.yaml")


def test_config_check_command_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "node.yaml"
    bad.write_text(GOOD.replace("adapter: zigbee2mqtt", "adapter: knx"))
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{bad}:9: sensors.0.adapter" in result.stderr
    good = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "config", "check", str(EXAMPLE)], capture_output=True, text=True
    )
    assert good.returncode == 0 and "site willow-court, 4 sensors, 1 cameras" in good.stdout


def test_broker_url_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(GOOD)
    assert config.broker_url() == "mqtt://127.0.0.1:1883" == config.uplink_url()
    monkeypatch.setenv("PATROLNET_MQTT_URL", "mqtt://broker.example:1884")
    assert config.broker_url() == "mqtt://broker.example:1884" == config.uplink_url()
    monkeypatch.setenv("PATROLNET_UPLINK_URL", "mqtts://centre.example:8883")
    assert config.uplink_url() == "mqtts://centre.example:8883"


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models a field's annotation holds: in lists, dicts, unions and Annotated alike."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _config_tree() -> set[type[BaseModel]]:
    """Every class of the node config: the sections reachable from NodeConfig and their public config bases."""
    found: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [NodeConfig]
    while todo:
        model = todo.pop()
        if model in found:
            continue
        found.add(model)
        todo += [base for base in model.__mro__[1:] if issubclass(base, ConfigModel) and base is not ConfigModel]
        for field in model.model_fields.values():
            todo += _models_in(field.annotation)
    return {model for model in found if not model.__name__.startswith("_")}


def test_every_config_class_has_the_one_base_the_one_suffix_and_documented_fields() -> None:
    tree = _config_tree()
    assert len(tree) > 20
    for model in tree:
        assert issubclass(model, ConfigModel), model
        assert model.__name__.endswith("Config"), model
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.title and field.description, f"{model.__name__}.{name} needs a title and a description"


def test_the_map_in_edge_config_names_every_class_and_where_it_lives() -> None:
    doc = edge.config.__doc__ or ""
    tree = {model.__name__: model for model in _config_tree()}
    assert set(re.findall(r"\b[A-Z]\w*Config\b", doc)) - {"ConfigModel"} == set(tree)
    placed = re.findall(r"\(?(\w+Config)\)?\s+(\w+/\w+\.py)", doc)
    assert len(placed) > 20
    for name, path in placed:
        assert inspect.getfile(tree[name]).endswith(path), f"{name} is not in {path}"


def test_a_loaded_config_is_read_only() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(ValidationError, match="frozen"):
        config.sensors[0].name = "elsewhere"

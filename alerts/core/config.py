"""The one base class of every part of a node's config file (``edge.config`` maps the tree).

It lives on the ground floor because the sections live next to the code they
configure, in ``ingest``, ``detectors`` and ``edge``, and all of them may
import from here. A section refuses keys it does not know, so a typo in a
node's YAML is an error naming the line instead of a setting silently left at
its default; and it is frozen, since a loaded config is read by many threads
(the MQTT callback, the timer, each camera) and nobody may change it under
them.

Example:
    >>> from pydantic import Field, ValidationError
    >>> class ExampleConfig(ConfigModel):
    ...     fps: float = Field(default=10.0, title="Frames per second", description="How often it looks.")
    >>> try:
    ...     ExampleConfig.model_validate({"fsp": 5})
    ... except ValidationError as exc:
    ...     print(exc.errors()[0]["msg"])
    Extra inputs are not permitted
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """A section of a node's config (or the root, ``NodeConfig``): unknown keys refused, read-only once loaded.

    Its subclasses end in ``Config``, and each of their fields has a title and a description.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

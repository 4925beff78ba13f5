"""The base of every wire model of the API (cpt_core.api, cpt_core.api_status): camelCase on the wire, unknown
fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields rejected (catches misspelled keys)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )

    def wire(self) -> dict:
        """The object as it appears in Kubernetes: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def field_default(cls, name: str):
        """The declared default of field `name` (python name). Readers of the wire form that meet a key left out
        (the exporter, validation) take it from here instead of repeating the literal, so a default changed in
        this module changes there too."""
        return cls.model_fields[name].get_default(call_default_factory=True)

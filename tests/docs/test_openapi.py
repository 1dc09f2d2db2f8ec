"""The OpenAPI document kept in the repository is valid OpenAPI 3 and matches the code:
every route the ingress serves is documented, and every error code it can answer is listed."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml
from openapi_spec_validator import validate

import courier_gateway
from courier_gateway.intake.routes import routes

DOCUMENT = yaml.safe_load(
    resources.files("courier_gateway.intake").joinpath("openapi.yaml").read_text()
)
SOURCES = Path(courier_gateway.__file__).parent


def test_document_is_valid_openapi() -> None:
    validate(DOCUMENT)


def test_every_route_is_documented() -> None:
    served = {
        (re.sub(r"<(\w+)(:\w+)?>", r"{\1}", route.uri), method.lower())
        for route in routes._future_routes
        for method in route.methods
    }
    documented = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == documented


def test_every_error_code_in_the_code_is_in_the_document() -> None:
    used = set()
    for path in (SOURCES / "intake").glob("*.py"):
        # IntakeError(404, "UNKNOWN_SOURCE", …), (NotFound, 404, "NOT_FOUND", …), return 413, "…"
        used |= {code for _, code in re.findall(r'(\d{3}), "([A-Z][A-Z_]+)"', path.read_text())}
    assert len(used) >= 10
    listed = set(DOCUMENT["components"]["schemas"]["Error"]["properties"]["errorCode"]["enum"])
    assert used <= listed, used - listed


def test_every_intake_status_has_a_response() -> None:
    responses = DOCUMENT["paths"]["/v1/events/{source}"]["post"]["responses"]
    assert set(responses) == {"202", "400", "401", "404", "408", "413", "415", "429", "431", "503"}

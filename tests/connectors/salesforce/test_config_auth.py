"""Config validation, the JWT assertion, OAuth refusal messages, the REST record shape, strategy choice."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from ferry.connectors.salesforce import SalesforceConfig, SalesforceSink
from ferry.connectors.salesforce.auth import classify_token_response, jwt_assertion, load_private_key, token_form
from ferry.connectors.salesforce.collections import to_rest_record
from ferry.connectors.salesforce.strategy import Strategy
from ferry.connectors.shopify import ShopifyConfig
from ferry.core.schema import FieldSchema, ObjectSchema
from ferry.errors import AuthError, ConfigError, TransientError

EXAMPLE = Path(__file__).resolve().parents[3] / "src" / "ferry" / "examples" / "shopify-to-salesforce.yml"


@pytest.fixture(scope="module")
def key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def key_file(tmp_path: Path, key_pem: str) -> Path:
    path = tmp_path / "key.pem"
    path.write_text(key_pem)
    return path


def _cfg(**kw: Any) -> SalesforceConfig:
    base: dict[str, Any] = {"system": "salesforce", "login_url": "https://login.salesforce.com/", "client_id": "3MVGx"}
    return SalesforceConfig.model_validate({**base, **kw})


def _expand(text: str) -> str:
    """Enough of `${VAR}` / `${VAR:-default}` expansion to validate the example pipeline."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: m.group(2) if m.group(2) is not None else f"x-{m.group(1)}",
                  text)


def test_example_pipeline_blocks_validate() -> None:
    doc = yaml.safe_load(_expand(EXAMPLE.read_text()))
    doc["source"]["url"] = "https://acme.myshopify.com"
    doc["target"]["login_url"] = "https://login.salesforce.com"
    source = ShopifyConfig.model_validate(doc["source"])
    target = SalesforceConfig.model_validate(doc["target"])
    assert source.streams == ["customers", "products", "orders"] and source.ca_file is None
    assert target.auth == "jwt" and target.bulk_threshold is None and target.ca_file is None


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"auth": "jwt", "username": "u"}, "SALESFORCE_PRIVATE_KEY_FILE"),
     ({"auth": "jwt", "private_key": "pem"}, "SALESFORCE_USERNAME"),
     ({"auth": "client_credentials"}, "SALESFORCE_CLIENT_SECRET"),
     ({"auth": "refresh_token"}, "SALESFORCE_REFRESH_TOKEN"),
     ({"auth": "client_credentials", "client_secret": "s", "collections_batch_size": 201}, "collections_batch_size"),
     ({"auth": "client_credentials", "client_secret": "s", "api_version": "latest"}, "api_version")],
)
def test_missing_pieces_are_named(kw: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        _cfg(**kw)
    assert needle in str(info.value)


def test_secrets_never_show_in_repr() -> None:
    cfg = _cfg(auth="client_credentials", client_secret="TOPSECRET", private_key="PEMSECRET")
    assert "TOPSECRET" not in repr(cfg) and "PEMSECRET" not in repr(cfg)


def test_jwt_assertion_claims(key_file: Path, key_pem: str) -> None:
    cfg = _cfg(username="int@example.com", private_key_file=str(key_file))
    now = time.time()
    token = jwt_assertion(cfg, load_private_key(cfg), now)
    public = serialization.load_pem_private_key(key_pem.encode(), None).public_key()
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="https://login.salesforce.com")  # type: ignore[arg-type]
    assert claims["iss"] == "3MVGx" and claims["sub"] == "int@example.com"
    assert claims["exp"] == int(now) + 180
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_private_key_from_env_with_escaped_newlines(key_pem: str) -> None:
    cfg = _cfg(username="u", private_key=key_pem.replace("\n", "\\n"))
    assert load_private_key(cfg) == key_pem


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = _cfg(username="u", private_key_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="SALESFORCE_PRIVATE_KEY_FILE"):
        token_form(cfg, time.time())


def test_garbage_key_is_a_config_error_without_echoing_it() -> None:
    cfg = _cfg(username="u", private_key="NOT-A-KEY-SECRET")
    with pytest.raises(ConfigError) as info:
        token_form(cfg, time.time())
    assert "NOT-A-KEY-SECRET" not in str(info.value)


def _token_resp(status: int, body: dict[str, str]) -> httpx.Response:
    request = httpx.Request("POST", "https://login.salesforce.com/services/oauth2/token")
    return httpx.Response(status, content=orjson.dumps(body), request=request)


def test_invalid_grant_says_what_to_fix() -> None:
    err = classify_token_response(_token_resp(400, {"error": "invalid_grant",
                                                   "error_description": "user hasn't approved this consumer"}))
    assert isinstance(err, AuthError) and "pre-authorize" in str(err) and err.code == "invalid_grant"


def test_token_endpoint_outage_is_transient() -> None:
    assert isinstance(classify_token_response(_token_resp(503, {})), TransientError)


# ----------------------------------------------------------------- REST record shape

CONTACT = ObjectSchema("Contact", {
    "AccountId": FieldSchema("AccountId", "reference", reference_to=["Account"], relationship_name="Account"),
    "LastName": FieldSchema("LastName", "string"),
})


def test_relationship_keys_become_nested_references() -> None:
    body = to_rest_record({"Ext__c": "1", "LastName": "X", "Account.Ext__c": "A1"}, "Contact", CONTACT)
    assert body == {"attributes": {"type": "Contact"}, "Ext__c": "1", "LastName": "X",
                    "Account": {"attributes": {"type": "Account"}, "Ext__c": "A1"}}


def test_null_reference_clears_the_lookup_field() -> None:
    assert to_rest_record({"Account.Ext__c": None}, "Contact", CONTACT)["AccountId"] is None


def test_unknown_relationship_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Owner"):
        to_rest_record({"Owner.Ext__c": "1"}, "Contact", CONTACT)


async def test_choose_strategy_explains_itself() -> None:
    async with SalesforceSink(_cfg(auth="client_credentials", client_secret="s")) as sink:
        bulk = sink.choose_strategy("Contact", 48_120)
        small = sink.choose_strategy("Contact", 450)
        one = sink.choose_strategy("Contact", 1)
    assert bulk.strategy is Strategy.BULK and "48,120" in bulk.reason and "fewest API calls" in bulk.reason
    assert small.strategy is Strategy.COMPOSITE and "1 call" in small.reason
    assert one.strategy is Strategy.SINGLE

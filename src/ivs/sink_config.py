"""The `sinks:` entries of a sensor's YAML: where its messages go (`ivs.assemble` builds them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ivs.config_base import Settings as _Model


class JsonlSinkConfig(_Model):
    type: Literal["jsonl"]
    path: str = Field(description="File to append JSON lines to, or - for stdout.")


class MqttSinkConfig(_Model):
    type: Literal["mqtt"]
    host: str = Field("127.0.0.1", description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual TLS port).")
    username: str | None = Field(None, description="User name, if the broker wants one.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the password (never the password itself)."
    )
    tls_ca: str | None = Field(None, description="CA certificate (PEM) to verify the broker; enables TLS.")
    tls_cert: str | None = Field(None, description="Client certificate (PEM), for brokers that ask for one.")
    tls_key: str | None = Field(None, description="Client key (PEM).")
    outbox: str = Field("ivs-outbox.sqlite", description="Durable outbox file: messages wait here until acknowledged.")
    max_messages: int = Field(1_000_000, ge=1, description="Outbox bound; past it the oldest are shed, and counted.")
    encoding: Literal["json", "msgpack"] = Field("json", description="Payload encoding.")
    batch_linger_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Wait up to this long to send many messages as one on ivs/ID/batch (0: one MQTT message"
        " each). A stop or clear is never held back.",
    )
    batch_max: int = Field(500, ge=1, le=10_000, description="Messages in one batch at most.")
    home_assistant: bool = Field(False, description="Also publish Home Assistant MQTT discovery and entity states.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery topic prefix.")


class HttpSinkConfig(_Model):
    type: Literal["http"]
    url: str = Field(description="Where batches are POSTed (e.g. the hub's /api/v1/ingest).")
    token_env: str | None = Field(
        None, description="Name of the environment variable holding the bearer token (never the token itself)."
    )
    ca_file: str | None = Field(
        None, description="CA certificate (PEM) to verify an https url against, e.g. ca.pem from `ivs hub certs`."
    )
    outbox: str = Field("ivs-http-outbox.sqlite", description="Durable outbox file (not shared with another sink).")
    max_messages: int = Field(1_000_000, ge=1, description="Outbox bound; past it the oldest are shed, and counted.")
    batch_size: int = Field(100, ge=1, le=10_000, description="Messages per POST at most.")
    batch_wait_s: float = Field(0.2, gt=0, description="How long to wait for a batch to fill.")


class WebhookSinkConfig(_Model):
    type: Literal["webhook"]
    url: str = Field(description="Where each event is POSTed (http:// or https://).")
    secret_env: str = Field(
        description="Name of the environment variable holding the HMAC secret (never the secret itself)."
    )
    kinds: list[str] | None = Field(None, min_length=1, description="Event kinds to post (default: every event).")
    ca_file: str | None = Field(None, description="CA certificate (PEM) to verify an https url against.")
    outbox: str = Field("ivs-webhook-outbox.sqlite", description="Durable outbox file (not shared with another sink).")
    max_messages: int = Field(100_000, ge=1, description="Outbox bound; past it the oldest are shed, and counted.")

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: list[str] | None) -> list[str] | None:
        from ivs.events import EVENT_KINDS

        known = sorted(str(k.__struct_config__.tag) for k in EVENT_KINDS)
        for kind in v or ():
            if kind not in known:
                raise ValueError(f"unknown event kind {kind!r}: expected some of {', '.join(known)}")
        return v


class ModbusSinkConfig(_Model):
    type: Literal["modbus"]
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(502, ge=1, le=65535, description="TCP port (502 is Modbus's; below 1024 needs privileges).")


class OpcUaSinkConfig(_Model):
    type: Literal["opcua"]
    host: str = Field("127.0.0.1", description="Address to listen on (not loopback: needs a login).")
    port: int = Field(4840, ge=1, le=65535, description="TCP port (4840 is OPC UA's).")
    username: str | None = Field(None, description="The one user name clients log in with.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding that user's password (never the password)."
    )
    cert: str | None = Field(None, description="The server's certificate (DER or PEM): encrypted channels only.")
    key: str | None = Field(None, description="The server's private key (PEM).")
    client_certs: str | None = Field(None, description="Folder of client certificates that may log in with them.")

    @model_validator(mode="after")
    def _pairs(self) -> OpcUaSinkConfig:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env come together: expected both or neither")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key come together: expected both or neither")
        if self.client_certs is not None and self.cert is None:
            raise ValueError("client_certs need the server's cert and key (certificate logins are encrypted)")
        return self


SinkConfig = Annotated[
    JsonlSinkConfig | MqttSinkConfig | HttpSinkConfig | WebhookSinkConfig | ModbusSinkConfig | OpcUaSinkConfig,
    Field(discriminator="type"),
]


SINK_TYPES = ("jsonl", "mqtt", "http", "webhook", "modbus", "opcua")
"""Every sink config's `type` (the tags pydantic puts in an error's location)."""

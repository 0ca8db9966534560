"""The deploy-only `SG_*` variables of a flow pod, read in one place.

streamguard's own settings are `STREAMGUARD_*` (`streamguard.core.settings.Settings`), the same in every
process; these few describe where this pod sits in a Kubernetes deployment and exist only there
(k8s/README.md lists them). Blank counts as unset. An invalid value raises ClusterConfigError naming the
variable, which the entrypoint reports in one line with exit status 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SG_"
DEFAULT_WORKER_PORT = 9999
"""Port Bytewax processes talk on (the chart's `service.port`)."""
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_DNS_WAIT_S = 120
DEFAULT_SEED_DIR = Path("/app/model-registry")


class ClusterConfigError(ValueError):
    """The pod's environment does not describe a consistent Bytewax cluster."""


class PodSettings(BaseSettings):
    """The pod's `SG_<FIELD>` variables (frozen)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    namespace: str = ""
    """The pod's namespace (downward API), for the peers' DNS names."""
    peer_service: str = ""
    """The headless Service in front of the flow pods; blank: the StatefulSet's name."""
    peer_port: int = DEFAULT_WORKER_PORT
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    recovery_holders: int | None = None
    """H: pods holding recovery partitions, the replica count when the store was created (never changed)."""
    dns_wait_s: int = DEFAULT_DNS_WAIT_S
    """How long the entrypoint waits for the pod's own DNS record."""
    model_seed_dir: Path = DEFAULT_SEED_DIR
    """The model registry baked into the image, seeded into the shared volume once."""

    @field_validator("peer_port", "recovery_holders", "dns_wait_s", mode="before")
    @classmethod
    def _positive_int(cls, raw: object, info: ValidationInfo) -> object:
        if isinstance(raw, str) and (not raw.isascii() or not raw.isdigit() or int(raw) < 1):
            raise ValueError(f"{variable(info.field_name)} must be a positive integer, got {raw!r}")
        return raw

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PodSettings:
        """Read the `SG_*` variables of `env` (os.environ in a pod, a plain mapping in tests).

        Raises ClusterConfigError naming the variable at fault.
        """
        given = {}
        for name in cls.model_fields:
            value = env.get(variable(name), "").strip()
            if value:
                given[name] = value
        try:
            # model_validate validates `given` alone: BaseSettings reads os.environ only in __init__.
            return cls.model_validate(given)
        except ValidationError as exc:
            error = exc.errors()[0]
            cause = error.get("ctx", {}).get("error")
            name = str(error["loc"][0])
            raise ClusterConfigError(
                str(cause) if cause else f"{variable(name)}: {error['msg']}, got {given.get(name)!r}"
            ) from None


def variable(field: str) -> str:
    """Return the variable of a PodSettings field: `SG_<FIELD>`."""
    return f"{ENV_PREFIX}{field.upper()}"

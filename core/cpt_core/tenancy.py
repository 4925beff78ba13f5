"""Rules for a spec on a shared cluster: what cannot work there, and what the cluster admin does not allow.

`validation.validate_resource` adds these problems beside the schema's, so a refused spec gets the same
`SpecValid=False` condition naming the field and the rule. The admin's policy (allowed image repositories and
digests, allowed reward modules) comes from the chart's `policy` values through the operator's environment
(`TenantPolicy.from_env`): it is read where the planner validates, without threading settings through it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import urlsplit

from cpt_core import api, rewards

INT64_MAX = 2**63 - 1
# Service and PyTorchJob names derived from the run name are DNS-1035 labels: a letter first.
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?", re.ASCII)
# The image reference grammar of distribution/reference: [domain[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# A first component is a registry only with a dot, a port, or as localhost (else it is part of the path).
_DOMAIN = rf"(?:localhost(?::[0-9]+)?|{_LABEL}(?:\.{_LABEL})+(?::[0-9]+)?|{_LABEL}:[0-9]+)"
# Matched whole (fullmatch) and ASCII-only: `$` would accept a trailing newline and `\w` any Unicode letter.
IMAGE_REF = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::(?P<tag>[\w][\w.-]{{0,127}}))?"
                       r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?", re.ASCII)
CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data a ConfigMap (an etcd value) may hold
ENV_IMAGES = "CPT_ALLOWED_IMAGES"
ENV_DIGEST = "CPT_REQUIRE_IMAGE_DIGEST"
ENV_REWARDS = "CPT_ALLOWED_REWARD_MODULES"
ENV_INTERNAL_ENDPOINTS = "CPT_ALLOWED_INTERNAL_ENDPOINTS"
ENV_DEFAULT_ENDPOINT = "CPT_STORAGE_ENDPOINT"  # the admin's own endpoint (kube.settings): allowed as it is
# Names that resolve inside the cluster or the site, never on the internet: a run's endpoint there would make the
# operator (which PUTs the run's owner marker and reads its results) reach services of the cluster.
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".svc", ".cluster.local", ".home.arpa", ".lan",
                     ".intranet", ".corp", ".private")


@dataclass(frozen=True)
class TenantPolicy:
    """The admin's rules. `images`: allowed repository prefixes (empty or "*": any); `reward_modules`: allowed
    module prefixes for `module:function` rewards (empty: built-ins only; "*": any but the never-allowed ones,
    rewards.never_a_reward); `internal_endpoints`: storage endpoints a spec may name although they are loopback,
    link-local, private or cluster-internal: host names (".suffix" for a domain), CIDRs, or "*"."""

    images: tuple[str, ...] = ()
    require_digest: bool = False
    reward_modules: tuple[str, ...] = ()
    internal_endpoints: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "TenantPolicy":
        env = os.environ if env is None else env
        split = lambda raw: tuple(x.strip() for x in raw.split(",") if x.strip())  # noqa: E731
        digest = (env.get(ENV_DIGEST) or "false").strip().lower()
        if digest not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{ENV_DIGEST}={digest!r} is not a boolean (true/false)")
        internal = split(env.get(ENV_INTERNAL_ENDPOINTS) or "")
        for entry in internal:
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{ENV_INTERNAL_ENDPOINTS}: {entry!r} is not a CIDR (a.b.c.d/n)") from None
        default = (env.get(ENV_DEFAULT_ENDPOINT) or "").strip()
        try:
            host = _host(default)[0] if default else None
        except ValueError as exc:
            raise ValueError(f"{ENV_DEFAULT_ENDPOINT}={default!r}: {exc}") from None
        return cls(images=split(env.get(ENV_IMAGES) or ""), require_digest=digest in ("true", "1", "yes"),
                   reward_modules=split(env.get(ENV_REWARDS) or ""),
                   internal_endpoints=internal + ((host,) if host else ()))


def raw_int_problems(node: Any, path: str = "spec") -> Iterable[str]:
    """Integers Kubernetes cannot store (int64) anywhere in the raw spec, before the schema parses them."""
    if isinstance(node, bool):
        return
    if isinstance(node, int) and not -INT64_MAX - 1 <= node <= INT64_MAX:
        yield f"{path}: integers must fit in 64 bits (|n| < 2^63); Kubernetes cannot store {str(node)[:20]}..."
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from raw_int_problems(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from raw_int_problems(value, f"{path}[{i}]")


def problems(resource: api.ContinualPostTraining, mode: str, policy: Optional[TenantPolicy]) -> Iterable[str]:
    spec = resource.spec
    yield from _endpoint_problems(spec.storage.endpoint, (policy or TenantPolicy()) if mode == "cluster" else None)
    yield from _tracking_problems(spec.tracking, (policy or TenantPolicy()) if mode == "cluster" else None)
    for path, quantity in (("spec.learner.cpu", spec.learner.cpu), ("spec.learner.memory", spec.learner.memory)):
        if quantity is not None and float(re.sub(r"[^0-9.]", "", quantity) or 0) == 0:
            yield f"{path}: must be above zero (got {quantity!r}); leave it out for the default request"
    rewards = [(f"spec.tasks[{i}].reward", t.reward) for i, t in enumerate(spec.tasks)]
    rewards += [(f"spec.general[{i}].reward", b.reward) for i, b in enumerate(spec.general)]
    for path, reward in rewards:
        yield from _reward_problems(path, reward, policy if mode == "cluster" else None)
    if mode != "cluster":
        return
    if not DNS_1035.fullmatch(resource.metadata.name):
        yield (f"metadata.name: must start with a letter on a cluster (got {resource.metadata.name!r}); the run's "
               "Services and jobs are named after it and must be DNS-1035 labels")
    locations = [("spec.model", spec.model)]
    locations += [(f"spec.tasks[{i}].{k}", getattr(t, k)) for i, t in enumerate(spec.tasks) for k in ("train", "eval")]
    locations += [(f"spec.general[{i}].eval", b.eval) for i, b in enumerate(spec.general)]
    for path, uri in locations:
        if not uri.startswith("s3://"):
            yield f"{path}: must be an s3:// URI on a cluster (got {uri!r}); local paths only work with `cpt run`"
    if spec.rollout.gpus == 0 and any(spec.needs_rollout_servers(i) for i in range(len(spec.tasks) + 1)):
        yield ("spec.rollout.gpus: vLLM rollout servers need at least 1 GPU on a cluster (or set rollout.engine: hf "
               "and evaluation.engine: hf)")
    for path, image in (("spec.learner.image", spec.learner.image), ("spec.rollout.image", spec.rollout.image)):
        if image is not None:
            yield from _image_problems(path, image, policy or TenantPolicy())
    yield from _configmap_problems(resource)


def _endpoint_problems(endpoint: Optional[str], policy: Optional[TenantPolicy], path: str = "spec.storage.endpoint",
                       secret: str = "spec.storage.secretRef", who: str = "the operator does") -> Iterable[str]:
    """A spec's endpoint must parse as the operator and botocore will read it, and on a cluster (`policy` set)
    must not be a loopback, link-local, private or cluster-internal host unless the admin allows it."""
    if not endpoint:
        return
    if "@" in endpoint.split("?")[0].split("#")[0]:
        # The value is not echoed: it holds a password.
        yield (f"{path}: must not contain user info (user:password@); credentials go in a Secret "
               f"named by {secret}")
        return
    try:
        host, _ = _host(endpoint)
    except ValueError as exc:
        yield f"{path}: {exc} (got {endpoint[:200]!r}); write http(s)://host[:port]"
        return
    why = internal_reason(host)
    if policy is not None and why is not None and not endpoint_allowed(host, policy):
        yield (f"{path}: {host!r} is {why}; {who} not reach such hosts for a run "
               f"unless the cluster's admin allows them (chart value policy.allowedInternalEndpoints)")


def _tracking_problems(tracking: Optional[api.TrackingSpec], policy: Optional[TenantPolicy]) -> Iterable[str]:
    """A tracking server is tenant input the stage pods connect to: the storage endpoint's rules apply to it. A
    file store (file:///...) is a path on the machine of `cpt run`, meaningless in a pod."""
    if tracking is None:
        return
    who = "the stage pods do"
    if tracking.mlflow is not None:
        uri, path = tracking.mlflow.tracking_uri, "spec.tracking.mlflow.trackingUri"
        if uri.startswith("file:"):
            if policy is not None:
                yield (f"{path}: a file store ({uri[:200]!r}) only works with `cpt run`; on a cluster name an "
                       "MLflow tracking server, http(s)://host[:port]")
        else:
            yield from _endpoint_problems(uri, policy, path, "spec.tracking.mlflow.secretRef", who)
    if tracking.wandb is not None:
        yield from _endpoint_problems(tracking.wandb.base_url, policy, "spec.tracking.wandb.baseUrl",
                                      "spec.tracking.wandb.secretRef", who)


def _host(endpoint: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, lower case, without brackets or a trailing dot; ValueError saying why not."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise ValueError(f"not a URL that parses ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not host:
        raise ValueError("has no host")
    if port == 0:
        raise ValueError("port 0 cannot be connected to")
    if not host.isascii():
        raise ValueError("the host must be ASCII (write an international name in its xn-- form)")
    host = host.rstrip(".")
    if _ip(host) is None and not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is neither a host name (letters, digits, '-' and '.') nor an IP address")
    return host, port or (80 if parts.scheme == "http" else 443)


_HOSTNAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?",
                       re.ASCII)


def _ip(host: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address a host literal means to the resolver: also the shorthand IPv4 forms inet_aton accepts
    (`127.1`, `0x7f.0.0.1`, `2130706433`), which getaddrinfo connects to as well."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host) and not host.endswith("."):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def literal_address(endpoint: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address an endpoint names literally (`http://10.0.0.5:9000`, `http://[fd00::5]`), else None."""
    try:
        return _ip(_host(endpoint)[0])
    except ValueError:
        return None


def internal_reason(host: str) -> Optional[str]:
    """Why `host` is not a public internet host (loopback, link-local, private, cluster-internal), or None."""
    ip = _ip(host)
    if ip is not None:
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or ip
        for test, what in (("is_loopback", "a loopback address"), ("is_link_local", "a link-local address "
                           "(cloud metadata lives there)"), ("is_unspecified", "the unspecified address"),
                           ("is_multicast", "a multicast address"), ("is_private", "a private address")):
            if getattr(ip, test):
                return what
        return None if ip.is_global else "not a public address"
    if host == "localhost" or host.endswith(".localhost"):
        return "a loopback name"
    if "." not in host:
        return "a single-label name (the cluster's DNS search path resolves it to a Service)"
    if host.endswith(INTERNAL_SUFFIXES):
        return "a cluster- or site-internal name"
    return None


def resolved_problem(endpoint: Optional[str], policy: TenantPolicy,
                     resolve: Callable[..., list] = socket.getaddrinfo) -> Optional[str]:
    """The same rule where the operator connects: a host NAME that this pod's resolver turns into an internal
    address (the search path makes `minio.storage` a Service; a tenant's DNS can answer 169.254.169.254) and the
    admin does not allow. None when fine, when the name does not resolve (the read reports that), or when the
    endpoint is an address or a name the admin allows (validation decided those). It checks the answer now; a
    DNS server that answers differently a moment later is not caught (docs/install.md, "Storage hosts")."""
    if not endpoint:
        return None
    try:
        host, port = _host(endpoint)
    except ValueError:
        return None
    if _ip(host) is not None or endpoint_allowed(host, policy):
        return None
    try:
        answers = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for answer in answers:
        address = str(answer[4][0]).split("%")[0]
        why = internal_reason(address)
        if why is not None and not endpoint_allowed(address, policy):
            return (f"storage endpoint {host!r} resolves to {address}, {why}; the operator does not reach such "
                    "hosts for a run unless the cluster's admin allows them (chart value policy.allowedInternalEndpoints)")
    return None


def endpoint_allowed(host: str, policy: TenantPolicy) -> bool:
    """Whether the admin's `internal_endpoints` name this host: "*", the host, a ".suffix" of it, or a CIDR."""
    ip = _ip(host)
    for entry in policy.internal_endpoints:
        entry = entry.strip().lower().rstrip(".")
        if entry == "*" or entry == host or (entry.startswith(".") and host.endswith(entry)):
            return True
        if "/" in entry and ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except (ValueError, TypeError):  # another address family, or not a CIDR
                continue
        elif ip is not None and _ip(entry) == ip:
            return True
    return False


def _image_problems(path: str, image: str, policy: TenantPolicy) -> Iterable[str]:
    match = IMAGE_REF.fullmatch(image)
    if not match:
        yield f"{path}: not a valid image reference [registry/]repository[:tag][@sha256:digest] (got {image!r})"
        return
    if not match["digest"] and match["tag"] in (None, "latest"):
        yield f"{path}: needs a tag other than latest, or a digest, so what runs cannot change under the run (got {image!r})"
    repository = image.split("@")[0]
    repository = repository.rsplit(":", 1)[0] if match["tag"] else repository
    if policy.images and "*" not in policy.images and not any(
            repository == p.rstrip("/") or repository.startswith(p.rstrip("/") + "/") for p in policy.images):
        yield (f"{path}: repository {repository!r} is not allowed by the cluster's image policy (allowed: "
               f"{', '.join(policy.images)}; chart value policy.allowedImages)")
    if policy.require_digest and not match["digest"]:
        yield f"{path}: the cluster's image policy requires a digest (@sha256:...; chart value policy.requireDigest)"


def _reward_problems(path: str, reward: str, policy: Optional[TenantPolicy]) -> Iterable[str]:
    if ":" not in reward:
        return
    module, function = reward.split(":", 1)
    why = rewards.never_a_reward(module)
    if why is not None or function.startswith("_"):
        what = f"module {module!r} is {why}" if why else f"function {function!r} is private"
        yield f"{path}: {reward!r} can never be a reward: {what}; a reward is a public function of your own module"
        return
    allowed = None if policy is None else policy.reward_modules
    if allowed is not None and "*" not in allowed and not any(
            module == m or module.startswith(m + ".") for m in allowed):
        yield (f"{path}: module {module!r} is not allowed by the cluster's reward policy (allowed: "
               f"{', '.join(allowed) or 'built-in rewards only'}; chart value policy.allowedRewardModules)")


def _configmap_problems(resource: api.ContinualPostTraining) -> Iterable[str]:
    size = _largest_config_bytes(resource)
    if size > CONFIGMAP_LIMIT - 4096:
        yield (f"spec: the stage configuration would be {size} bytes, over the 1 MiB a ConfigMap holds; "
               "shorten answerPatterns, names or URIs, or split the tasks over several runs")


# Sizes of the largest stage config by (name, namespace, spec JSON): a pass validates its resource twice (the
# storage reader, the planner), and every pass of an unchanged run checks the same spec again.
_sizes: OrderedDict[tuple[str, str, str], int] = OrderedDict()
_sizes_lock = threading.Lock()


def _largest_config_bytes(resource: api.ContinualPostTraining) -> int:
    from cpt_core.stage import SPEC_CACHE_MAX_BYTES, SPEC_YAML_CACHE, StageConfig, spec_json

    spec = resource.spec
    key = (resource.metadata.name, resource.metadata.namespace, spec_json(spec))
    with _sizes_lock:
        size = _sizes.get(key)
        if size is not None:
            _sizes.move_to_end(key)
            return size
    largest = StageConfig(run=resource.metadata.name, namespace=resource.metadata.namespace, stage="evaluate",
                          task_index=len(spec.tasks), attempt=spec.retry.limit, spec=spec, spec_hash="0" * 64,
                          rollout_url="http://" + "x" * 200)
    size = len(largest.dump_yaml().encode())  # the spec's part rendered once, for the ConfigMap too
    if len(key[2]) > SPEC_CACHE_MAX_BYTES:
        return size  # not kept (stage.SPEC_CACHE_MAX_BYTES)
    with _sizes_lock:
        _sizes[key] = size
        while len(_sizes) > SPEC_YAML_CACHE:
            _sizes.popitem(last=False)
    return size

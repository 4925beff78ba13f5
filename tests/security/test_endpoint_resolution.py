"""Issue 26: the internal-host rule where the operator connects. Validation reads what a spec says; a public-
looking name can still resolve to an internal address in the operator's pod (the cluster's search path turns
`minio.storage` into a Service, a tenant's own DNS can answer 169.254.169.254). The storage reader resolves the
name first and sends nothing (not the owner marker's PUT) to a name that lands inside.

The answers are given to `resolved_problem` as a resolver function: this machine has no DNS server that answers a
public-looking name with an internal address. The addresses themselves are classified by the same code as in
validation (tests/security/test_spec_rules.py)."""

from __future__ import annotations

import socket

from cpt_core.tenancy import TenantPolicy, resolved_problem


def answers(*addresses: str):
    calls = []

    def resolve(host, port, type=0):
        calls.append((host, port, type))
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    resolve.calls = calls
    return resolve


def test_a_name_resolving_inside_is_refused_naming_the_address():
    for address, why in (("169.254.169.254", "link-local"), ("10.96.0.10", "private"), ("127.0.0.1", "loopback"),
                         ("fe80::1%eth0", "link-local"), ("100.64.0.7", "not a public address")):
        problem = resolved_problem("https://s3.tenant-dns.example:9000", TenantPolicy(), answers(address))
        assert problem and why in problem and address.split("%")[0] in problem, (address, problem)
        assert "policy.allowedInternalEndpoints" in problem


def test_one_internal_answer_among_public_ones_is_enough():
    problem = resolved_problem("https://s3.example.com", TenantPolicy(), answers("52.216.8.1", "10.0.0.9"))
    assert problem and "10.0.0.9" in problem


def test_public_answers_pass_and_the_lookup_uses_the_endpoints_port():
    resolve = answers("52.216.8.1", "2600:1f18::1")
    assert resolved_problem("http://s3.example.com:9000", TenantPolicy(), resolve) is None
    assert resolve.calls == [("s3.example.com", 9000, socket.SOCK_STREAM)]


def test_what_the_admin_allows_is_not_looked_up_or_is_matched_by_cidr():
    resolve = answers("10.20.1.2")
    assert resolved_problem("http://minio.storage.svc:9000", TenantPolicy(internal_endpoints=(".svc",)), resolve) is None
    assert resolve.calls == []  # allowed by name: not even resolved
    assert resolved_problem("https://s3.corp-vpc.example", TenantPolicy(internal_endpoints=("10.20.0.0/16",)),
                            resolve) is None
    assert resolved_problem("https://s3.corp-vpc.example", TenantPolicy(internal_endpoints=("10.21.0.0/16",)),
                            resolve) is not None


def test_addresses_and_unresolvable_names_are_left_to_validation_and_the_read():
    resolve = answers("10.0.0.1")
    assert resolved_problem("http://8.8.8.8:9000", TenantPolicy(), resolve) is None  # validation decided
    assert resolved_problem(None, TenantPolicy(), resolve) is None  # AWS S3's own endpoint
    assert resolve.calls == []

    def fails(host, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert resolved_problem("https://no-such-host.example", TenantPolicy(), fails) is None  # the read says so


def test_the_real_resolver_is_the_default():
    """With this machine's resolver (its /etc/hosts): `LOCALHOST.` resolves to a loopback address."""
    problem = resolved_problem("http://LOCALHOST.:9000", TenantPolicy())
    assert problem and "resolves to" in problem and "loopback" in problem

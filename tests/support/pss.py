"""The Pod Security Standards `restricted` profile (Kubernetes v1.30; baseline rules included), as a checker.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ rather than mocked: each rule
below is one row of that page's tables, with the field paths it lists. `violations(pod_spec)` returns one line
per broken rule ([] = admitted by a namespace labelled `pod-security.kubernetes.io/enforce: restricted`).
"""

from __future__ import annotations

from typing import Any, Iterable

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
APPARMOR_OK = {"RuntimeDefault", "Localhost"}


def _containers(spec: dict) -> Iterable[tuple[str, dict]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            yield f"{key}[{c.get('name')}]", c


def violations(spec: dict, annotations: dict | None = None) -> list[str]:
    """Every `restricted` rule `spec` (a PodSpec) breaks."""
    out: list[str] = []
    pod_sc: dict[str, Any] = spec.get("securityContext") or {}
    containers = list(_containers(spec))
    # ---- baseline
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("baseline: hostProcess")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"baseline: host namespaces ({key})")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"baseline: hostPath volume {v.get('name')}")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"baseline: privileged {where}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"baseline: hostProcess {where}")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"baseline: capabilities {sorted(added - BASELINE_CAPABILITIES)} added in {where}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"baseline: hostPort in {where}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"baseline: procMount in {where}")
    for where, sc in [("pod", pod_sc)] + [(w, c.get("securityContext") or {}) for w, c in containers]:
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"baseline: seLinuxOptions in {where}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"baseline: seccomp Unconfined in {where}")
        if "appArmorProfile" in sc and sc["appArmorProfile"].get("type") not in APPARMOR_OK:
            out.append(f"baseline: appArmorProfile in {where}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"baseline: AppArmor annotation {key}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"baseline: unsafe sysctl {sysctl.get('name')}")
    # ---- restricted
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"restricted: volume type {sorted(kinds)} ({v.get('name')})")
    if pod_sc.get("runAsUser") == 0:
        out.append("restricted: runAsUser 0 (pod)")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"restricted: allowPrivilegeEscalation must be false in {where}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            out.append(f"restricted: runAsNonRoot must be true in {where} (or the pod)")
        if sc.get("runAsUser") == 0:
            out.append(f"restricted: runAsUser 0 in {where}")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"restricted: seccompProfile RuntimeDefault or Localhost needed in {where} (or the pod)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"restricted: capabilities.drop must include ALL in {where}")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"restricted: only NET_BIND_SERVICE may be added in {where}")
    return out


def pod_specs(obj: dict) -> list[tuple[str, dict, dict]]:
    """(where, pod spec, pod annotations) of every pod template in a workload object (Pod, Deployment,
    StatefulSet, DaemonSet, Job, CronJob, PyTorchJob)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return [(kind, spec, (obj.get("metadata") or {}).get("annotations") or {})]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    if "template" in spec:
        t = spec["template"]
        return [(kind, t["spec"], (t.get("metadata") or {}).get("annotations") or {})]
    if kind == "PyTorchJob":
        return [(f"PyTorchJob/{role}", r["template"]["spec"],
                 (r["template"].get("metadata") or {}).get("annotations") or {})
                for role, r in spec["pytorchReplicaSpecs"].items()]
    return []


def workload_report(obj: dict) -> list[str]:
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    return [f"{name} {where}: {v}" for where, spec, ann in pod_specs(obj) for v in violations(spec, ann)]

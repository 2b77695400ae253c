# -*- coding: utf-8 -*-
# Copyright (c) gpu-vm-bootstrap maintainers
# SPDX-License-Identifier: MIT
"""`vmctl hosts status --json` and `vmctl hosts list --json`, read for the vmctl_hosts_info module
and the vmctl_hosts inventory plugin. Pure functions: no process is run here.

`hosts status` exits 0 when every host answered and 1 when any is unreachable; with exit code 1
it still prints the whole table ({"hosts": [...], "reachable": N, "unreachable": M}), which is an
answer, not a failure. Any other exit code, or exit code 1 with {"error": {...}}, is a failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl import (
    VmctlError,
    error_of,
)

REACHABLE = "vmctl_reachable"
UNREACHABLE = "vmctl_unreachable"
GPU_FREE = "vmctl_gpu_free"
# The row of this machine in `hosts status` (the name is reserved in the config).
LOCAL = "local"


def status_args(timeout=None, local_only=False):
    """The arguments of `vmctl hosts status` (after the global options)."""
    args = ["hosts", "status"]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if local_only:
        args.append("--local")
    return args


def is_table(answer, key="hosts"):
    """Whether vmctl printed its table ({KEY: [...]}) rather than an error."""
    return isinstance(answer, dict) and isinstance(answer.get(key), list) and "error" not in answer


def status_answer(argv, rc, answer, stderr):
    """The answer of `vmctl --json hosts status`: exit 0, or exit 1 with the whole table (some host
    unreachable). Raises VmctlError for anything else."""
    if rc in (0, 1) and is_table(answer):
        return answer
    if rc == 0:
        raise VmctlError(argv, rc, "`hosts status` printed no host table (is this vmctl older than `vmctl hosts`?)",
                         ["upgrade vmctl on this host (the vmctl .deb)"], stderr)
    raise error_of(argv, rc, answer, stderr)


def list_answer(argv, rc, answer, stderr):
    """The answer of `vmctl --json hosts list` (exit 0 with {"hosts": [...]}); VmctlError otherwise."""
    if rc == 0 and is_table(answer):
        return answer
    if rc == 0:
        raise VmctlError(argv, rc, "`hosts list` printed no host list (is this vmctl older than `vmctl hosts`?)",
                         ["upgrade vmctl on this host (the vmctl .deb)"], stderr)
    raise error_of(argv, rc, answer, stderr)


def summary(answer):
    """The vmctl_hosts_info result: the rows as vmctl gives them, the names of the hosts that
    answered and of those that did not, and the free GPUs over all reachable hosts.

    Not `reachable`/`unreachable`: Ansible reads a true `unreachable` in a module's result as "the
    managed host is unreachable"."""
    hosts = answer["hosts"]
    return dict(
        hosts=hosts,
        reachable_hosts=[h["name"] for h in hosts if h.get("reachable")],
        unreachable_hosts=[h["name"] for h in hosts if not h.get("reachable")],
        gpus_free=sum(h.get("gpus_free") or 0 for h in hosts if h.get("reachable")),
    )


def unreachable_message(answer):
    """One line naming every unreachable host with vmctl's reason, e.g.
    `unreachable: gone (ssh lab@198.18.0.250: connect timed out after 5 s)`."""
    parts = []
    for h in answer["hosts"]:
        if not h.get("reachable"):
            error = h.get("error") if isinstance(h.get("error"), dict) else {}
            reason = error.get("message")
            parts.append("%s (%s)" % (h["name"], reason) if reason else h["name"])
    return "unreachable: %s" % ", ".join(parts)


def var_name(key):
    """A status row key as a host variable: prefixed with vmctl_ (once: vmctl_version stays)."""
    return key if key.startswith("vmctl_") else "vmctl_" + key


def connection_vars(name, ssh=None, port=None, identity=None):
    """How Ansible reaches a vmctl host: `local` is this machine; any other host over SSH to the
    destination of its [hosts.NAME] table ([user@]host, port, identity)."""
    if name == LOCAL:
        return dict(ansible_connection="local")
    out = {}
    if ssh:
        user, at, host = ssh.rpartition("@")
        out["ansible_host"] = host
        if at and user:
            out["ansible_user"] = user
    if port is not None:
        out["ansible_port"] = port
    if identity:
        out["ansible_ssh_private_key_file"] = identity
    return out


def entry_vars(entry):
    """The host variables from a `hosts list` row (the [hosts.NAME] table)."""
    out = {}
    for key in ("ssh", "port", "identity", "sudo", "uri"):
        if key in entry:
            out["vmctl_" + key] = entry[key]
    if "vmctl" in entry:
        out["vmctl_program"] = entry["vmctl"]
    return out


def inventory(listed, status, include_local=True):
    """The inventory hosts: [(name, variables, groups)], one per `hosts status` row, in its order.

    `listed` is the `hosts list --json` answer (connection settings), `status` the `hosts status
    --json` one. Variables: the ansible_* connection ones, every key of the status row prefixed
    with vmctl_ (vmctl_reachable, vmctl_gpus_free, vmctl_gpus, vmctl_vms, vmctl_bridge,
    vmctl_version, ...) and the config's vmctl_port, vmctl_identity, vmctl_sudo, vmctl_uri and
    vmctl_program. Groups: vmctl_reachable or vmctl_unreachable, and vmctl_gpu_free for a reachable
    host with a free GPU. A configured host missing from the status (added between the two calls)
    gets its connection variables and no group.
    """
    entries = dict((e["name"], e) for e in listed.get("hosts", []) if isinstance(e, dict) and e.get("name"))
    out = []
    seen = set()
    for row in status["hosts"]:
        name = row["name"]
        seen.add(name)
        if name == LOCAL and not include_local:
            continue
        entry = entries.get(name, {})
        variables = connection_vars(name, entry.get("ssh") or row.get("ssh"), entry.get("port"), entry.get("identity"))
        variables.update((var_name(k), v) for k, v in row.items() if k != "name")
        variables.update(entry_vars(entry))
        groups = [REACHABLE if row.get("reachable") else UNREACHABLE]
        if row.get("reachable") and (row.get("gpus_free") or 0) > 0:
            groups.append(GPU_FREE)
        out.append((name, variables, groups))
    for name, entry in entries.items():
        if name not in seen:
            variables = connection_vars(name, entry.get("ssh"), entry.get("port"), entry.get("identity"))
            variables.update(entry_vars(entry))
            out.append((name, variables, []))
    return out

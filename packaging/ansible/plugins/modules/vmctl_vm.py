#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) gpu-vm-bootstrap maintainers
# SPDX-License-Identifier: MIT

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmctl_vm
short_description: Manage a VM on a GPU VM host with vmctl
version_added: "0.1.0"
description:
  - Makes a libvirt VM exist or not, running or shut off, through C(vmctl) on the managed host
    (C(vmctl create), C(start), C(stop), C(delete), each with C(--json)).
  - Idempotent. It reads the VM's state with C(vmctl list --json) and acts only when the state
    differs. A second run with the same arguments changes nothing.
  - In check mode it reports what it would run, and runs nothing.
  - A refusal by vmctl (exit code 2, nothing changed) fails the task with vmctl's message and its
    C(help) lines.
options:
  name:
    description: The VM's name (the libvirt domain name).
    type: str
    required: true
  state:
    description:
      - C(present) the VM exists. A new VM is made as C(vmctl create) makes it, so it starts
        unless O(create_args) has C(--no-start).
      - C(started) the VM exists and runs. A new VM is made, then it is running.
      - C(stopped) the VM exists and is shut off. A new VM is made with C(--no-start). A running
        one gets an ACPI shutdown (C(vmctl stop)).
      - C(absent) the VM and the storage vmctl made for it are gone (C(vmctl delete --yes)). A
        running VM is stopped first, powered off after O(stop_timeout).
    type: str
    choices: [present, absent, started, stopped]
    default: present
  os:
    description: What C(vmctl create) makes when the VM does not exist.
    type: str
    choices: [ubuntu, talos]
    default: ubuntu
  create_args:
    description:
      - Arguments after C(vmctl create OS NAME), as a list (for example
        C(["--ip", "auto", "--gpu", "0", "--wait"])). Used only when the VM is created; an
        existing VM is not changed to match them.
    type: list
    elements: str
    default: []
  stop_timeout:
    description: Seconds to wait for an ACPI shutdown.
    type: int
    default: 60
  force_stop:
    description:
      - Power the VM off (C(vmctl stop --force)) when it has not shut down after O(stop_timeout)
        for O(state=stopped). O(state=absent) always does.
    type: bool
    default: false
  vmctl:
    description: The vmctl binary (a name in PATH, or a path).
    type: str
    default: vmctl
  connect:
    description: The libvirt URI (C(vmctl --connect)); vmctl's own default when not set.
    type: str
  config:
    description: vmctl's config file (C(vmctl --config)); C(/etc/vmctl/config.toml) when not set.
    type: path
notes:
  - vmctl must be installed on the managed host (the C(gpu_vm_bootstrap.vmctl.gpu_host) role
    installs it), and the task must be able to reach libvirt (root, or a member of the libvirt
    group).
  - Supports check mode.
author:
  - gpu-vm-bootstrap maintainers (@gpu-vm-bootstrap)
"""

EXAMPLES = r"""
- name: A GPU VM, running
  gpu_vm_bootstrap.vmctl.vmctl_vm:
    name: train1
    state: started
    create_args: [--ip, auto, --gpu, "0", --cpus, "8", --memory, "32768", --wait]

- name: Shut it off for the night
  gpu_vm_bootstrap.vmctl.vmctl_vm:
    name: train1
    state: stopped
    stop_timeout: 120
    force_stop: true

- name: Gone, with its disks
  gpu_vm_bootstrap.vmctl.vmctl_vm:
    name: train1
    state: absent
"""

RETURN = r"""
vm:
  description: The VM's row of C(vmctl list --json) after the task; null when it is absent.
  returned: always
  type: dict
  sample: {"name": "train1", "state": "running", "vcpus": 8, "memory_mib": 32768, "gpus": ["0000:01:00.0"]}
commands:
  description: The vmctl commands the task ran (or, in check mode, would run), as argv lists.
  returned: always
  type: list
  elements: list
  sample: [["vmctl", "--json", "start", "train1"]]
results:
  description: vmctl's JSON answer to each command run, in order.
  returned: always
  type: list
  elements: raw
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl import (
    Vmctl,
    VmctlError,
)

# libvirt states as vmctl's JSON names them (hypervisor::State, kebab-case).
OFF = ("shut-off", "crashed")


def steps(vm, params):
    """The vmctl subcommands that bring `vm` (a list row, or None) to the wanted state (pure)."""
    name, state = params["name"], params["state"]
    stop = ["stop", name, "--timeout", str(params["stop_timeout"])]
    if state == "absent":
        if vm is None:
            return []
        before = [] if vm["state"] in OFF else [stop + ["--force"]]
        return before + [["delete", name, "--yes"]]
    if vm is None:
        create = ["create", params["os"], name] + list(params["create_args"])
        if state == "stopped" and "--no-start" not in create:
            create.append("--no-start")
        after = [["start", name]] if state == "started" and "--no-start" in create else []
        return [create] + after
    if state == "started" and vm["state"] != "running":
        return [["start", name]]
    if state == "stopped" and vm["state"] not in OFF:
        return [stop + (["--force"] if params["force_stop"] else [])]
    return []


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent", "started", "stopped"]),
            os=dict(type="str", default="ubuntu", choices=["ubuntu", "talos"]),
            create_args=dict(type="list", elements="str", default=[]),
            stop_timeout=dict(type="int", default=60),
            force_stop=dict(type="bool", default=False),
            vmctl=dict(type="str", default="vmctl"),
            connect=dict(type="str"),
            config=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["stop_timeout"] < 0:
        module.fail_json(msg="stop_timeout must be 0 or more seconds, not %d" % p["stop_timeout"])
    vmctl = Vmctl(module, p["vmctl"], p["connect"], p["config"])
    try:
        vm = vmctl.vm(p["name"])
        todo = steps(vm, p)
        commands = [vmctl.argv(s) for s in todo]
        if module.check_mode or not todo:
            module.exit_json(changed=bool(todo), vm=vm, commands=commands, results=[])
        results = [vmctl.run(s) for s in todo]
        module.exit_json(changed=True, vm=vmctl.vm(p["name"]), commands=commands, results=results)
    except VmctlError as e:
        module.fail_json(**e.fail_args())


if __name__ == "__main__":
    main()

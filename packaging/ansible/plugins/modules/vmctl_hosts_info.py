#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) gpu-vm-bootstrap maintainers
# SPDX-License-Identifier: MIT

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmctl_hosts_info
short_description: The inventory of every vmctl host (vmctl hosts status)
version_added: "0.1.0"
description:
  - Runs C(vmctl --json hosts status) on the managed host and returns its rows, one per host
    (this machine as C(local), then every C([hosts.NAME]) table of vmctl's config). A row has the
    host's CPUs and memory, GPUs free and used with the VMs holding them, VMs, the bridge's last
    address scan, and the vmctl and gpu-vm-bootstrap versions.
  - Changes nothing, and supports check mode (it runs the same read-only command).
  - A host that does not answer costs at most one SSH connect timeout and shows as unreachable
    (vmctl exits 1 and still prints every row). That is a result, not a failure, unless
    O(fail_on_unreachable) is set.
  - Any other vmctl failure fails the task with vmctl's message and its C(help) lines.
options:
  timeout:
    description:
      - The SSH connect timeout per remote host in seconds (C(hosts status --timeout)). vmctl's
        C(ssh_connect_timeout) setting (default 5) when not set.
    type: int
  local_only:
    description: Only this machine's row (C(hosts status --local)); no SSH.
    type: bool
    default: false
  fail_on_unreachable:
    description: Fail the task when any host is unreachable (its name and vmctl's reason in C(msg)).
    type: bool
    default: false
  vmctl:
    description: The vmctl binary (a name in PATH, or a path).
    type: str
    default: vmctl
  connect:
    description: The libvirt URI of this machine (C(vmctl --connect)); vmctl's own default when not set.
    type: str
  config:
    description: vmctl's config file (C(vmctl --config)), where the hosts are; C(/etc/vmctl/config.toml) when not set.
    type: path
notes:
  - vmctl must be installed on the managed host, with the remote hosts in its config
    (C(vmctl hosts add)) and SSH to them working without a prompt (vmctl uses C(BatchMode=yes)).
  - Supports check mode.
  - The inventory plugin C(gpu_vm_bootstrap.vmctl.vmctl_hosts) makes the same rows an inventory,
    one inventory host per vmctl host.
author:
  - gpu-vm-bootstrap maintainers (@gpu-vm-bootstrap)
"""

EXAMPLES = r"""
- name: Every vmctl host
  gpu_vm_bootstrap.vmctl.vmctl_hosts_info:
    timeout: 3
  register: fleet

- name: Where the free GPUs are
  ansible.builtin.debug:
    msg: "{{ fleet.hosts | selectattr('gpus_free', 'gt', 0) | map(attribute='name') | list }}"

- name: Stop unless every host answers
  gpu_vm_bootstrap.vmctl.vmctl_hosts_info:
    fail_on_unreachable: true
"""

RETURN = r"""
hosts:
  description:
    - The rows of C(vmctl hosts status --json), as vmctl gives them, this machine (C(local))
      first. An unreachable host has C(reachable=false), vmctl's C(error) (C(message), C(help)) and
      nulls or empty lists for what could not be read.
  returned: always
  type: list
  elements: dict
  sample:
    - name: local
      ssh: null
      reachable: true
      error: null
      elapsed_ms: 14
      vmctl_version: 0.1.0
      bootstrap_version: 0.1.0
      version_mismatch: false
      cpus: 8
      memory_bytes: 33554432000
      memory_available_bytes: 20000000000
      gpus: [{"bdf": "0000:41:00.0", "name": "NVIDIA A100 80GB PCIe", "driver": "vfio-pci", "isolated": true, "vm": "vm1"}]
      gpus_free: 0
      gpus_used: 1
      vms: [{"name": "vm1", "state": "running"}]
      bridge: {"name": "br0", "subnet": "198.18.2.0/24", "free": 250, "used": 3, "conflicts": 0, "scanned_at": 1765000000}
reachable_hosts:
  description: The names of the hosts that answered.
  returned: always
  type: list
  elements: str
  sample: [local, gpu2]
unreachable_hosts:
  description:
    - The names of the hosts that did not answer. Not C(unreachable), which Ansible reserves,
      because a true C(unreachable) in a result marks the managed host unreachable.
  returned: always
  type: list
  elements: str
  sample: [gpu3]
gpus_free:
  description: Isolated (vfio-pci) GPUs not held by a VM, over all reachable hosts.
  returned: always
  type: int
  sample: 3
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl import (
    Vmctl,
    VmctlError,
)
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl_hosts import (
    status_answer,
    status_args,
    summary,
    unreachable_message,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            timeout=dict(type="int"),
            local_only=dict(type="bool", default=False),
            fail_on_unreachable=dict(type="bool", default=False),
            vmctl=dict(type="str", default="vmctl"),
            connect=dict(type="str"),
            config=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["timeout"] is not None and p["timeout"] < 1:
        module.fail_json(msg="timeout must be 1 or more seconds, not %d" % p["timeout"])
    vmctl = Vmctl(module, p["vmctl"], p["connect"], p["config"])
    try:
        answer = status_answer(*vmctl.call(status_args(p["timeout"], p["local_only"])))
    except VmctlError as e:
        module.fail_json(**e.fail_args())
    result = summary(answer)
    if p["fail_on_unreachable"] and result["unreachable_hosts"]:
        module.fail_json(msg=unreachable_message(answer), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

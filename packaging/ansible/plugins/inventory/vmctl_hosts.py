# -*- coding: utf-8 -*-
# Copyright (c) gpu-vm-bootstrap maintainers
# SPDX-License-Identifier: MIT

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: vmctl_hosts
short_description: The vmctl hosts (vmctl hosts status) as an inventory
version_added: "0.1.0"
description:
  - One inventory host per vmctl host, read on the Ansible controller with C(vmctl --json hosts
    list) (the C([hosts.NAME]) tables of vmctl's config) and C(vmctl --json hosts status) (each
    host's CPUs, memory, GPUs, VMs, bridge and versions).
  - This machine is the host C(local), with C(ansible_connection=local). Every other host is
    reached over SSH the way vmctl reaches it, with C(ansible_host) and C(ansible_user) from its C(ssh)
    (C([user@]host)), C(ansible_port) from its C(port), C(ansible_ssh_private_key_file) from its
    C(identity).
  - Every key of the host's C(hosts status) row is a host variable prefixed with C(vmctl_)
    (C(vmctl_reachable), C(vmctl_error), C(vmctl_cpus), C(vmctl_memory_bytes), C(vmctl_gpus),
    C(vmctl_gpus_free), C(vmctl_gpus_used), C(vmctl_vms), C(vmctl_bridge), C(vmctl_version),
    C(vmctl_bootstrap_version), C(vmctl_version_mismatch), ...), and so are the config's
    C(vmctl_ssh), C(vmctl_port), C(vmctl_identity), C(vmctl_sudo), C(vmctl_uri) (the libvirt URI)
    and C(vmctl_program) (the host's C(vmctl) setting).
  - Groups C(vmctl_reachable) and C(vmctl_unreachable) (a host that did not answer within the
    connect timeout; the inventory is still built), and C(vmctl_gpu_free) (reachable, with at
    least one isolated GPU not held by a VM).
  - The inventory source is a YAML file whose name ends in C(vmctl_hosts.yml) or C(vmctl_hosts.yaml).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin, so that Ansible's C(auto) inventory plugin hands it the file.
    type: str
    required: true
    choices: [gpu_vm_bootstrap.vmctl.vmctl_hosts]
  vmctl:
    description: The vmctl binary on the controller (a name in PATH, or a path).
    type: str
    default: vmctl
  config:
    description: vmctl's config file (C(vmctl --config)); C(/etc/vmctl/config.toml) when not set.
    type: path
  timeout:
    description:
      - The SSH connect timeout per host in seconds (C(hosts status --timeout)); vmctl's
        C(ssh_connect_timeout) setting (default 5) when not set.
    type: int
  include_local:
    description: Whether this machine (the row C(local)) is an inventory host.
    type: bool
    default: true
notes:
  - vmctl must be installed on the controller, with the hosts in its config (C(vmctl hosts add)).
  - Building the inventory costs at most one connect timeout (the hosts are asked in parallel).
seealso:
  - module: gpu_vm_bootstrap.vmctl.vmctl_hosts_info
author:
  - gpu-vm-bootstrap maintainers (@gpu-vm-bootstrap)
"""

EXAMPLES = r"""
# inventory/gpu.vmctl_hosts.yml: the hosts of /etc/vmctl/config.toml on the controller, this
# machine included (`local`), 3 s at most for an unreachable one. The `constructed` options:
# a host whose vmctl runs with sudo is reached with become, there is a group per vmctl version
# (vmctl_0_1_0, ...) that an upgrade play can target, and a group of hosts with 64 GiB free.
plugin: gpu_vm_bootstrap.vmctl.vmctl_hosts
timeout: 3
compose:
  ansible_become: vmctl_sudo
keyed_groups:
  - key: vmctl_version
    prefix: vmctl
groups:
  big_memory: (vmctl_memory_available_bytes or 0) > 64 * 1024**3
"""

import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.process import get_bin_path
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl import (
    VmctlError,
    read_answer,
)
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl_hosts import (
    GPU_FREE,
    REACHABLE,
    UNREACHABLE,
    inventory as inventory_hosts,
    list_answer,
    status_answer,
    status_args,
)


def run_vmctl(argv):
    """Runs vmctl (argv, never a shell string); returns (argv, rc, JSON answer or None, stderr)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    return argv, proc.returncode, read_answer(out.decode("utf-8", "replace")), err.decode("utf-8", "replace")


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "gpu_vm_bootstrap.vmctl.vmctl_hosts"

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(("vmctl_hosts.yml", "vmctl_hosts.yaml"))

    def _vmctl_argv(self):
        binary = self.get_option("vmctl")
        if "/" not in binary:
            try:
                binary = get_bin_path(binary)
            except ValueError:
                raise AnsibleParserError("vmctl_hosts: no %s in PATH on the controller\nhelp: install the vmctl .deb, "
                                         "or set `vmctl:` to its path in the inventory file" % binary)
        argv = [binary, "--json"]
        if self.get_option("config"):
            argv += ["--config", self.get_option("config")]
        return argv

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        timeout = self.get_option("timeout")
        if timeout is not None and timeout < 1:
            raise AnsibleParserError("vmctl_hosts: timeout must be 1 or more seconds, not %d" % timeout)
        base = self._vmctl_argv()
        try:
            listed = list_answer(*run_vmctl(base + ["hosts", "list"]))
            status = status_answer(*run_vmctl(base + status_args(timeout)))
        except OSError as e:
            raise AnsibleParserError("vmctl_hosts: could not run %s: %s" % (base[0], e))
        except VmctlError as e:
            raise AnsibleParserError("vmctl_hosts: `%s` failed: %s%s" % (
                " ".join(e.argv), e.message, "".join("\nhelp: %s" % h for h in e.help_lines)))
        self.populate(inventory_hosts(listed, status, self.get_option("include_local")))

    def populate(self, hosts):
        for group in (REACHABLE, UNREACHABLE, GPU_FREE):
            self.inventory.add_group(group)
        strict = self.get_option("strict")
        for name, variables, groups in hosts:
            self.inventory.add_host(name)
            for group in groups:
                self.inventory.add_child(group, name)
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            # The groups see the composed variables too.
            hostvars = self.inventory.get_host(name).get_vars()
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)

"""`vmctl hosts status --json` and `hosts list --json` read by the vmctl_hosts_info module and the
vmctl_hosts inventory plugin: the result, the inventory, unreachable hosts, vmctl's errors.

Run by tests/e2e/60-ansible-collection.sh with the collection on PYTHONPATH
(COLLECTIONS_PATH, as ansible_collections.gpu_vm_bootstrap.vmctl), with /usr/bin/python3.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import ansible_collections.gpu_vm_bootstrap.vmctl.plugins.modules.vmctl_hosts_info as info_module
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl import VmctlError
from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.module_utils.vmctl_hosts import (
    inventory,
    list_answer,
    status_answer,
    status_args,
    summary,
    unreachable_message,
)

LOCAL = {
    "name": "local", "ssh": None, "reachable": True, "error": None, "elapsed_ms": 14,
    "vmctl_version": "0.1.0", "bootstrap_version": "0.1.0", "version_mismatch": False,
    "cpus": 8, "memory_bytes": 33554432000, "memory_available_bytes": 20000000000,
    "gpus": [{"bdf": "0000:41:00.0", "name": "NVIDIA A100 80GB PCIe", "driver": "vfio-pci", "isolated": True,
              "vm": "vm1"}],
    "gpus_free": 0, "gpus_used": 1,
    "vms": [{"name": "vm1", "state": "running"}],
    "bridge": {"name": "br0", "subnet": "198.18.2.0/24", "free": 250, "used": 3, "conflicts": 0,
               "scanned_at": 1765000000},
}
GPU2 = dict(copy.deepcopy(LOCAL), name="gpu2", ssh="admin@198.18.0.20", gpus_free=2, gpus_used=0, vms=[],
            version_mismatch=True, vmctl_version="0.0.9")
GONE = {
    "name": "gone", "ssh": "198.18.0.250", "reachable": False,
    "error": {"message": "ssh 198.18.0.250: connect timed out after 5 s", "help": ["check the host is up"]},
    "elapsed_ms": 5003, "vmctl_version": None, "bootstrap_version": None, "version_mismatch": False,
    "cpus": None, "memory_bytes": None, "memory_available_bytes": None, "gpus": [], "gpus_free": 0,
    "gpus_used": 0, "vms": [], "bridge": None,
}
STATUS = {"hosts": [LOCAL, GPU2, GONE], "reachable": 2, "unreachable": 1}
LISTED = {"hosts": [
    {"name": "gpu2", "ssh": "admin@198.18.0.20", "port": 2222, "identity": "/root/.ssh/id_gpu2", "sudo": True,
     "vmctl": "/usr/local/bin/vmctl", "uri": "qemu+ssh://admin@198.18.0.20:2222/system?keyfile=/root/.ssh/id_gpu2"},
    {"name": "gone", "ssh": "198.18.0.250", "port": None, "identity": None, "sudo": False, "vmctl": "vmctl",
     "uri": "qemu+ssh://198.18.0.250/system"},
]}
ERROR = {"error": {"kind": "config", "message": "/etc/vmctl/config.toml: hosts.gpu2.port: 0 is out of range",
                   "causes": [], "help": ["set port to 1..65535, or remove it"]}}
ARGV = ["vmctl", "--json", "hosts", "status"]


class StatusAnswer(unittest.TestCase):
    def test_the_arguments_carry_the_timeout_and_local(self):
        self.assertEqual(status_args(), ["hosts", "status"])
        self.assertEqual(status_args(3, True), ["hosts", "status", "--timeout", "3", "--local"])

    def test_exit_1_with_the_whole_table_is_an_answer(self):
        self.assertIs(status_answer(ARGV, 1, STATUS, ""), STATUS)
        self.assertIs(status_answer(ARGV, 0, STATUS, ""), STATUS)

    def test_a_vmctl_error_carries_its_message_and_help(self):
        for rc in (1, 2):
            with self.assertRaises(VmctlError) as e:
                status_answer(ARGV, rc, ERROR, "error: ...\n")
            self.assertEqual(e.exception.rc, rc)
            self.assertEqual(e.exception.message, ERROR["error"]["message"])
            self.assertEqual(e.exception.help_lines, ["set port to 1..65535, or remove it"])
            self.assertEqual(e.exception.fail_args()["msg"], "vmctl failed: " + ERROR["error"]["message"])

    def test_no_json_falls_back_to_stderr_then_the_exit_code(self):
        with self.assertRaises(VmctlError) as e:
            status_answer(ARGV, 2, None, "error: unrecognized subcommand 'hosts'\n")
        self.assertEqual(e.exception.message, "error: unrecognized subcommand 'hosts'")
        with self.assertRaises(VmctlError) as e:
            status_answer(ARGV, 137, None, "")
        self.assertEqual(e.exception.message, "exit code 137")

    def test_exit_0_without_a_table_is_an_error(self):
        with self.assertRaises(VmctlError) as e:
            status_answer(ARGV, 0, {"vms": []}, "")
        self.assertIn("no host table", e.exception.message)
        with self.assertRaises(VmctlError):
            list_answer(["vmctl", "--json", "hosts", "list"], 0, None, "")
        self.assertIs(list_answer([], 0, LISTED, ""), LISTED)


class Summary(unittest.TestCase):
    def test_names_the_reachable_and_unreachable_hosts_and_counts_free_gpus(self):
        result = summary(STATUS)
        self.assertEqual(result["hosts"], STATUS["hosts"])
        self.assertEqual(result["reachable_hosts"], ["local", "gpu2"])
        self.assertEqual(result["unreachable_hosts"], ["gone"])
        self.assertEqual(result["gpus_free"], 2)

    def test_the_unreachable_message_gives_vmctls_reason(self):
        self.assertEqual(unreachable_message(STATUS),
                         "unreachable: gone (ssh 198.18.0.250: connect timed out after 5 s)")


class Inventory(unittest.TestCase):
    def hosts(self, **kw):
        return dict((name, (variables, groups)) for name, variables, groups in inventory(LISTED, STATUS, **kw))

    def test_one_host_per_status_row_in_order(self):
        self.assertEqual([h[0] for h in inventory(LISTED, STATUS)], ["local", "gpu2", "gone"])
        self.assertEqual([h[0] for h in inventory(LISTED, STATUS, include_local=False)], ["gpu2", "gone"])

    def test_local_is_reached_with_the_local_connection(self):
        variables, groups = self.hosts()["local"]
        self.assertEqual(variables["ansible_connection"], "local")
        self.assertNotIn("ansible_host", variables)
        self.assertEqual(groups, ["vmctl_reachable"])

    def test_a_remote_host_is_reached_as_its_config_table_says(self):
        variables, groups = self.hosts()["gpu2"]
        self.assertEqual(variables["ansible_host"], "198.18.0.20")
        self.assertEqual(variables["ansible_user"], "admin")
        self.assertEqual(variables["ansible_port"], 2222)
        self.assertEqual(variables["ansible_ssh_private_key_file"], "/root/.ssh/id_gpu2")
        self.assertNotIn("ansible_connection", variables)
        self.assertEqual(groups, ["vmctl_reachable", "vmctl_gpu_free"])

    def test_no_user_port_or_identity_sets_none(self):
        variables, groups = self.hosts()["gone"]
        self.assertEqual(variables["ansible_host"], "198.18.0.250")
        for key in ("ansible_user", "ansible_port", "ansible_ssh_private_key_file"):
            self.assertNotIn(key, variables)
        self.assertEqual(groups, ["vmctl_unreachable"])
        self.assertEqual(variables["vmctl_error"]["message"], "ssh 198.18.0.250: connect timed out after 5 s")

    def test_the_status_row_and_the_config_are_host_variables_prefixed_vmctl(self):
        variables, _ = self.hosts()["gpu2"]
        self.assertEqual(variables["vmctl_gpus_free"], 2)
        self.assertEqual(variables["vmctl_reachable"], True)
        self.assertEqual(variables["vmctl_gpus"], GPU2["gpus"])
        self.assertEqual(variables["vmctl_bridge"]["subnet"], "198.18.2.0/24")
        self.assertEqual(variables["vmctl_version"], "0.0.9")
        self.assertEqual(variables["vmctl_bootstrap_version"], "0.1.0")
        self.assertEqual(variables["vmctl_version_mismatch"], True)
        self.assertEqual(variables["vmctl_sudo"], True)
        self.assertEqual(variables["vmctl_program"], "/usr/local/bin/vmctl")
        self.assertTrue(variables["vmctl_uri"].startswith("qemu+ssh://admin@198.18.0.20:2222/system"))
        self.assertNotIn("vmctl_name", variables)
        self.assertNotIn("vmctl_vmctl_version", variables)

    def test_a_reachable_host_without_free_gpus_is_not_in_gpu_free(self):
        self.assertNotIn("vmctl_gpu_free", self.hosts()["local"][1])

    def test_a_host_configured_after_the_status_gets_its_connection_and_no_group(self):
        listed = copy.deepcopy(LISTED)
        listed["hosts"].append({"name": "late", "ssh": "ops@198.18.0.30", "port": None, "identity": None,
                                "sudo": False, "vmctl": "vmctl", "uri": "qemu+ssh://ops@198.18.0.30/system"})
        hosts = dict((n, (v, g)) for n, v, g in inventory(listed, STATUS))
        self.assertEqual(hosts["late"][0]["ansible_user"], "ops")
        self.assertEqual(hosts["late"][1], [])


class Module(unittest.TestCase):
    """The module run as Ansible runs it (its arguments in a JSON file), vmctl a stand-in script."""

    def run_module(self, rc, answer, **args):
        tmp = tempfile.mkdtemp(prefix="vmctl-hosts-info-")
        self.addCleanup(shutil.rmtree, tmp)
        fake = os.path.join(tmp, "vmctl")
        with open(fake, "w") as f:
            f.write("#!%s\nimport json, sys\njson.dump(sys.argv[1:], open(%r, 'w'))\nprint(%r)\nsys.exit(%d)\n" % (
                sys.executable, os.path.join(tmp, "argv.json"), json.dumps(answer), rc))
        os.chmod(fake, 0o755)
        params = os.path.join(tmp, "args.json")
        with open(params, "w") as f:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(args, vmctl=fake)}, f)
        proc = subprocess.run([sys.executable, info_module.__file__, params], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        with open(os.path.join(tmp, "argv.json")) as f:
            argv = json.load(f)
        return proc.returncode, json.loads(proc.stdout), argv

    def test_some_host_unreachable_is_a_result(self):
        rc, out, argv = self.run_module(1, STATUS, timeout=3, config="/tmp/c.toml")
        self.assertEqual(rc, 0, out)
        self.assertFalse(out.get("failed"))
        self.assertFalse(out["changed"])
        self.assertEqual(out["unreachable_hosts"], ["gone"])
        self.assertEqual(out["reachable_hosts"], ["local", "gpu2"])
        self.assertEqual(out["gpus_free"], 2)
        self.assertEqual(out["hosts"], STATUS["hosts"])
        self.assertEqual(argv, ["--json", "--config", "/tmp/c.toml", "hosts", "status", "--timeout", "3"])

    def test_fail_on_unreachable_fails_naming_the_host(self):
        rc, out, _ = self.run_module(1, STATUS, fail_on_unreachable=True)
        self.assertTrue(out["failed"])
        self.assertIn("gone (ssh 198.18.0.250: connect timed out after 5 s)", out["msg"])
        self.assertEqual(out["unreachable_hosts"], ["gone"])

    def test_a_vmctl_error_fails_with_its_help(self):
        rc, out, _ = self.run_module(2, ERROR)
        self.assertTrue(out["failed"])
        self.assertEqual(out["msg"], "vmctl failed: " + ERROR["error"]["message"])
        self.assertEqual(out["help"], ERROR["error"]["help"])
        self.assertEqual(out["rc"], 2)

    def test_check_mode_runs_the_same_read(self):
        rc, out, argv = self.run_module(0, {"hosts": [LOCAL], "reachable": 1, "unreachable": 0},
                                        local_only=True, _ansible_check_mode=True)
        self.assertFalse(out.get("failed"), out)
        self.assertFalse(out["changed"])
        self.assertEqual(out["reachable_hosts"], ["local"])
        self.assertEqual(argv, ["--json", "hosts", "status", "--local"])


if __name__ == "__main__":
    unittest.main()

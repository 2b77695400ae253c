"""The vmctl_vm module's decision (`steps`): which vmctl commands bring a VM to a state.

Run by tests/e2e/60-ansible-collection.sh with the collection on PYTHONPATH
(COLLECTIONS_PATH, as ansible_collections.gpu_vm_bootstrap.vmctl).
"""

import unittest

from ansible_collections.gpu_vm_bootstrap.vmctl.plugins.modules.vmctl_vm import steps


def params(state, create_args=(), force_stop=False):
    return dict(
        name="vm1", state=state, os="ubuntu", create_args=list(create_args),
        stop_timeout=30, force_stop=force_stop,
    )


def vm(state):
    return {"name": "vm1", "state": state}


class Steps(unittest.TestCase):
    def test_a_vm_already_in_the_state_needs_nothing(self):
        self.assertEqual(steps(vm("running"), params("started")), [])
        self.assertEqual(steps(vm("shut-off"), params("stopped")), [])
        self.assertEqual(steps(vm("paused"), params("present")), [])
        self.assertEqual(steps(None, params("absent")), [])

    def test_a_missing_vm_is_created_as_the_state_wants(self):
        self.assertEqual(steps(None, params("present", ["--ip", "auto"])),
                         [["create", "ubuntu", "vm1", "--ip", "auto"]])
        self.assertEqual(steps(None, params("stopped")),
                         [["create", "ubuntu", "vm1", "--no-start"]])
        self.assertEqual(steps(None, params("started", ["--no-start"])),
                         [["create", "ubuntu", "vm1", "--no-start"], ["start", "vm1"]])

    def test_stop_forces_only_when_asked_and_absent_always_does(self):
        self.assertEqual(steps(vm("running"), params("stopped")),
                         [["stop", "vm1", "--timeout", "30"]])
        self.assertEqual(steps(vm("running"), params("stopped", force_stop=True)),
                         [["stop", "vm1", "--timeout", "30", "--force"]])
        self.assertEqual(steps(vm("running"), params("absent")),
                         [["stop", "vm1", "--timeout", "30", "--force"], ["delete", "vm1", "--yes"]])
        self.assertEqual(steps(vm("shut-off"), params("absent")), [["delete", "vm1", "--yes"]])

    def test_a_paused_vm_is_started_for_started(self):
        self.assertEqual(steps(vm("paused"), params("started")), [["start", "vm1"]])


if __name__ == "__main__":
    unittest.main()

# -*- coding: utf-8 -*-
# Copyright (c) gpu-vm-bootstrap maintainers
# SPDX-License-Identifier: MIT
"""Runs vmctl with --json and reads its answer, for the collection's modules.

vmctl prints its result as JSON on stdout. When it fails it prints
{"error": {"kind", "message", "causes", "help"}} there instead, and exits 1 (failure) or 2 (bad
usage, or refused as unsafe, with nothing changed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json


class VmctlError(Exception):
    """vmctl exited non-zero; carries its message, help lines and exit code."""

    def __init__(self, argv, rc, message, help_lines, stderr):
        super(VmctlError, self).__init__(message)
        self.argv = argv
        self.rc = rc
        self.message = message
        self.help_lines = help_lines
        self.stderr = stderr

    def fail_args(self):
        """Keyword arguments for AnsibleModule.fail_json."""
        return dict(
            msg="vmctl failed: %s" % self.message,
            cmd=self.argv,
            rc=self.rc,
            help=self.help_lines,
            stderr=self.stderr,
        )


def read_answer(out):
    """vmctl's stdout as JSON, or None when it printed nothing or something else (pure)."""
    try:
        return json.loads(out) if out.strip() else None
    except ValueError:
        return None


def error_of(argv, rc, answer, stderr):
    """The VmctlError for a vmctl run that failed: its {"error": {...}} body when it printed one (pure)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or stderr.strip() or "exit code %d" % rc
    return VmctlError(argv, rc, message, list(error.get("help") or []), stderr)


class Vmctl(object):
    """vmctl on the managed host: the binary, the libvirt URI and the config file to use."""

    def __init__(self, module, binary="vmctl", connect=None, config=None):
        self.module = module
        self.binary = module.get_bin_path(binary, required=True) if "/" not in binary else binary
        self.connect = connect
        self.config = config

    def argv(self, args):
        """The whole command line: global options first, then the subcommand's."""
        argv = [self.binary, "--json"]
        if self.connect:
            argv += ["--connect", self.connect]
        if self.config:
            argv += ["--config", self.config]
        return argv + list(args)

    def call(self, args):
        """Runs vmctl (argv, never a shell string); returns (argv, rc, JSON answer or None, stderr)."""
        argv = self.argv(args)
        rc, out, err = self.module.run_command(argv, use_unsafe_shell=False)
        return argv, rc, read_answer(out), err

    def run(self, args):
        """Runs vmctl and returns its JSON answer; raises VmctlError when it exits non-zero."""
        argv, rc, answer, err = self.call(args)
        if rc != 0:
            raise error_of(argv, rc, answer, err)
        return answer

    def vm(self, name):
        """The VM's row of `vmctl list --json`, or None when there is no such VM."""
        for vm in self.run(["list"]).get("vms", []):
            if vm.get("name") == name:
                return vm
        return None

#!/usr/bin/python3
"""Checks deploy/ against the project, without Docker or a cluster.

What can be checked on a machine that can neither build the image nor run Kubernetes:
- deploy/Dockerfile: multi-stage (CUDA 13 devel to build, the runtime image of the same version
  to run); its build packages are scripts/setup.sh's list; it builds with scripts/build.sh (CUDA
  on) and runs no tests; it copies `pagoda` and the SentencePiece shim to where the loader looks
  (tokenizer/sentencepiece_loader.cc); non-root user; /models volume; EXPOSE = the ENTRYPOINT's
  ports = the gRPC default port of `pagoda serve`.
- deploy/kubernetes/*.yaml: every document parses with the expected kinds; GPU limits; ports,
  probe ports, probe paths and the readiness service name are those the server uses (read from
  server/ sources); the serve config's keys are flags of `pagoda serve` (serve_flag_names() in
  server/serve_config.cc); terminationGracePeriodSeconds exceeds preStop pause + drain timeout.
- With --pagoda: the real binary parses the ConfigMap's config together with the image's fixed
  flags and the Deployment's args (a deliberately bad --metrics-port, parsed last, makes it exit 2
  right after everything else was accepted). With --shim too: deploy/runtime-packages.sh maps the
  built binaries to run-time packages only.

  /usr/bin/python3 tests/deploy/test_deploy.py [--repo DIR] [--pagoda BIN] [--shim SO] [-v]
Needs PyYAML (Debian: python3-yaml).
"""
import os
import re
import shlex
import subprocess
import sys
import unittest

import deploy_support as support
from deploy_support import (
    FIXED_FLAGS, Image, apt_installs, exec_form, flag_list, flag_values, read, runs_script,
    serve_default, serve_names, setup_packages)
from kubernetes_checks import KubernetesTest  # noqa: F401 (run by unittest.main below)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = Image()

    def test_multistage_cuda13_devel_to_build_runtime_to_run(self):
        build, runtime = self.image.build.image, self.image.runtime.image
        m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-(?:cudnn-)?devel-(\w+\d+\.\d+)", build)
        self.assertIsNotNone(m, "build stage must be FROM nvidia/cuda:13.x.y-devel-<os>, got "
                             + build)
        self.assertEqual(m.group(1), "13", "build stage must use CUDA 13: " + build)
        want = build.replace("-devel-", "-runtime-")
        self.assertEqual(runtime, want, "runtime stage must be the runtime image of the same "
                         "CUDA version and OS as the build stage")

    def test_build_packages_are_setup_sh_packages(self):
        wanted = setup_packages()
        self.assertIn("libgrpc++-dev", wanted, "parsing scripts/setup.sh went wrong")
        build = self.image.build
        got = set()
        if runs_script(build, "scripts/setup.sh"):
            # Run as is: the list is setup.sh's by construction, if setup.sh is in the image
            # by then.
            copied = False
            for instr, rest in build.instructions:
                if instr == "COPY" and not rest.startswith("--from"):
                    srcs = [s for s in shlex.split(rest)[:-1] if not s.startswith("--")]
                    copied |= any(s in (".", "./", "scripts", "scripts/", "scripts/setup.sh")
                                  for s in srcs)
                if instr == "RUN" and re.search(r"scripts/setup\.sh", rest):
                    break
            self.assertTrue(copied, "the build stage runs scripts/setup.sh before copying it in")
            got |= wanted
        got |= apt_installs(build)
        self.assertEqual(got, wanted,
                         "build stage packages differ from scripts/setup.sh's: extra %s, missing %s"
                         % (sorted(got - wanted), sorted(wanted - got)))

    def test_builds_with_build_sh_cuda_on_and_runs_no_tests(self):
        runs = runs_script(self.image.build, "scripts/build.sh")
        self.assertTrue(runs, "the build stage must build with scripts/build.sh")
        self.assertTrue(any("-DPAGODA_CUDA=ON" in r for r in runs),
                        "scripts/build.sh must get -DPAGODA_CUDA=ON (the image is the GPU build)")
        self.assertTrue(re.search(r"-B build\b", read("scripts/build.sh")),
                        "scripts/build.sh no longer builds into build/; fix the COPY sources")
        for stage in self.image.stages:
            for run in stage.runs():
                for bad in ("ctest", "scripts/test.sh", "run_e2e"):
                    self.assertNotIn(bad, run, "the image build runs tests: " + run)

    def test_runtime_stage_installs_no_build_packages(self):
        explicit = apt_installs(self.image.runtime)
        for p in explicit:
            self.assertFalse(p.endswith("-dev") or p in ("g++", "gcc", "cmake", "ninja-build",
                                                         "build-essential", "ccache"),
                             "runtime stage installs a build package: " + p)
        from_file = any(re.search(r"xargs\s.*apt-get\s.*install", r)
                        for r in self.image.runtime.runs())
        if from_file:
            self.assertTrue(runs_script(self.image.build, "deploy/runtime-packages.sh"),
                            "runtime packages come from a file the build stage does not make "
                            "with deploy/runtime-packages.sh")
        else:
            self.assertTrue(explicit, "runtime stage installs no run-time libraries")

    def test_copies_binary_shim_and_assets_where_the_loader_looks(self):
        copies = self.image.copies_from_build()
        prefix = os.path.join(self.image.build.workdir, "build")
        self.assertRegex(read("cli/CMakeLists.txt"), r"add_executable\(\s*pagoda\b")
        self.assertRegex(read("tokenizer/CMakeLists.txt"),
                         r"add_library\(\s*pagoda_spm_shim\s+SHARED")
        binary = [d for s, d in copies if s == os.path.join(prefix, "cli", "pagoda")]
        shim = [d for s, d in copies
                if s == os.path.join(prefix, "tokenizer", "libpagoda_spm_shim.so")]
        self.assertEqual(len(binary), 1, "runtime stage must COPY --from the build stage %s/cli/"
                         "pagoda (got copies %s)" % (prefix, copies))
        self.assertEqual(len(shim), 1, "runtime stage must COPY --from the build stage %s/"
                         "tokenizer/libpagoda_spm_shim.so" % prefix)
        self.assertEqual(os.path.basename(shim[0]), "libpagoda_spm_shim.so")
        # tokenizer/sentencepiece_loader.cc: beside the executable, or ../lib.
        loader = read("tokenizer/sentencepiece_loader.cc")
        bindir = os.path.dirname(binary[0])
        allowed = []
        if '"/libpagoda_spm_shim.so"' in loader:
            allowed.append(bindir)
        if '"/../lib/libpagoda_spm_shim.so"' in loader:
            allowed.append(os.path.normpath(os.path.join(bindir, "..", "lib")))
        self.assertIn(os.path.dirname(shim[0]), allowed,
                      "the shim lands where sentencepiece_loader.cc does not look")
        self.assertTrue(any(s.endswith("/assets") or "/assets/models" in s for s, _ in copies),
                        "runtime stage must copy the bundled model assets")
        # The ENTRYPOINT's program is that binary, by path or through PATH.
        program = self.image.entrypoint[0]
        if program.startswith("/"):
            self.assertEqual(program, binary[0])
        else:
            self.assertEqual(program, "pagoda")
            self.assertIn(bindir, self.image.env.get("PATH", "").split(":"),
                          "ENTRYPOINT runs `pagoda` but PATH lacks " + bindir)

    def test_non_root_user_and_model_volume(self):
        users = self.image.runtime.get("USER")
        self.assertTrue(users, "runtime stage must switch to a non-root USER")
        uid = users[-1].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0,
                        "USER must be a numeric non-zero uid (Kubernetes runAsNonRoot checks it), "
                        "got " + users[-1])
        volumes = []
        for rest in self.image.runtime.get("VOLUME"):
            volumes += exec_form(rest) if rest.startswith("[") else rest.split()
        self.assertIn("/models", volumes)
        model = flag_values(self.image.entrypoint + self.image.cmd).get(
            "model", self.image.env.get("PAGODA_MODEL"))
        self.assertIsNotNone(model, "no default model: set PAGODA_MODEL or --model")
        self.assertTrue(model == "/models" or model.startswith("/models/"),
                        "the default model must come from the /models volume, got " + model)
        self.assertIn('getenv("PAGODA_MODEL")', read("cli/main.cc"),
                      "pagoda no longer reads PAGODA_MODEL")

    def test_entrypoint_and_exposed_ports(self):
        ep = self.image.entrypoint
        self.assertEqual(ep[1:2], ["serve"], "ENTRYPOINT must run `pagoda serve`")
        flags = self.image.flags
        known = serve_names("serve_flag_names")
        for name in flag_list(ep[2:] + self.image.cmd):
            self.assertIn(name, known | serve_names("serve_switch_names") | {"config"},
                          "ENTRYPOINT/CMD flag --%s is not a flag of pagoda serve" % name)
        for name in FIXED_FLAGS:
            self.assertIn(name, flags, "ENTRYPOINT must fix --" + name)
        self.assertEqual(flags["host"], "0.0.0.0")
        self.assertEqual(flags["metrics-host"], "0.0.0.0")
        grpc, metrics = int(flags["port"]), int(flags["metrics-port"])
        self.assertEqual(grpc, int(serve_default("port", r"int port = (\d+);")),
                         "the image's gRPC port differs from pagoda serve's default")
        self.assertTrue(0 < metrics < 65536 and metrics != grpc)
        self.assertEqual(self.image.exposed, {grpc, metrics},
                         "EXPOSE must be exactly the gRPC and metrics ports of the ENTRYPOINT")
        for name in FIXED_FLAGS:
            self.assertNotIn(name, flag_list(self.image.cmd),
                             "CMD repeats --%s (pagoda rejects a flag given twice)" % name)

    def test_dockerignore_keeps_build_trees_out(self):
        path = os.path.join(support.REPO, ".dockerignore")
        self.assertTrue(os.path.exists(path), "no .dockerignore beside the build context root")
        with open(path, encoding="utf-8") as f:
            rules = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        for want in (".git", "build", "build-*"):
            self.assertIn(want, rules, ".dockerignore must exclude " + want)

    @unittest.skipUnless(os.path.exists("/usr/bin/dpkg-query"), "needs dpkg")
    def test_runtime_packages_script_on_the_built_binaries(self):
        if not (support.PAGODA and support.SHIM):
            self.skipTest("no --pagoda/--shim given")
        script = os.path.join(support.REPO, "deploy", "runtime-packages.sh")
        r = subprocess.run(["bash", script, support.PAGODA, support.SHIM], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        pkgs = r.stdout.split()
        self.assertIn("libc6", pkgs)
        self.assertTrue(any(p.startswith("libgrpc") for p in pkgs), pkgs)
        self.assertTrue(any(p.startswith("libsentencepiece") for p in pkgs), pkgs)
        self.assertFalse([p for p in pkgs if p.endswith("-dev")], pkgs)

def main():
    rest = support.parse_args(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()

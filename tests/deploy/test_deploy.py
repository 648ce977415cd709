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
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import unittest

try:
    import yaml
except ImportError:  # a clear failure, not a skip: the checks matter
    sys.stderr.write("test_deploy: PyYAML is missing (Debian: apt-get install python3-yaml)\n")
    sys.exit(1)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAGODA = None
SHIM = None

# The flags the image's ENTRYPOINT fixes; the Deployment's args and the config must not set them.
FIXED_FLAGS = ("host", "port", "metrics-host", "metrics-port")


def read(rel):
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# Sources of truth in the project


def setup_packages():
    """The packages=( ... ) array of scripts/setup.sh."""
    text = read("scripts/setup.sh")
    m = re.search(r"^\s*packages=\((.*?)\)", text, re.S | re.M)
    if not m:
        raise AssertionError("scripts/setup.sh: no packages=( ... ) array")
    body = "\n".join(line.split("#", 1)[0] for line in m.group(1).splitlines())
    return set(body.split())


def serve_names(function):
    """The names listed by serve_flag_names() or serve_switch_names() in serve_config.cc."""
    text = read("server/serve_config.cc")
    m = re.search(function + r"\(\)\s*\{(.*?)return names;", text, re.S)
    if not m:
        raise AssertionError("server/serve_config.cc: %s() not found" % function)
    braces = re.search(r"names\s*=\s*\{(.*?)\};", m.group(1), re.S)
    if not braces:
        raise AssertionError("server/serve_config.cc: %s(): no name list" % function)
    return set(re.findall(r'"([^"]+)"', braces.group(1)))


def serve_default(field, pattern):
    """A default from server/serve_config.h, e.g. `int port = 50051;`."""
    m = re.search(pattern, read("server/serve_config.h"))
    if not m:
        raise AssertionError("server/serve_config.h: default of %s not found" % field)
    return m.group(1)


def readiness_service():
    m = re.search(r'kReadiness\s*=\s*"([^"]+)"', read("server/serve.cc"))
    if not m:
        raise AssertionError("server/serve.cc: kReadiness (the readiness service name) not found")
    return m.group(1)


def http_routes():
    """Paths the metrics HTTP server answers (server/metrics/http_server.cc)."""
    return set(re.findall(r'handle\("(/[^"]*)"', read("server/metrics/http_server.cc")))


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(text):
    """[(INSTRUCTION, rest)] with line continuations joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or (not cur and not s):
            continue  # comments (also inside a continuation) and blank lines
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        instr, _, rest = cur.partition(" ")
        out.append((instr.upper(), rest.strip()))
        cur = ""
    if cur:
        raise AssertionError("Dockerfile ends inside a line continuation")
    return out


class Stage:
    def __init__(self, index, image, name):
        self.index, self.image, self.name = index, image, name
        self.instructions = []
        self.workdir = "/"

    def runs(self):
        return [rest for instr, rest in self.instructions if instr == "RUN"]

    def get(self, instr):
        return [rest for i, rest in self.instructions if i == instr]


def dockerfile_stages():
    instructions = dockerfile_instructions(read("deploy/Dockerfile"))
    args, stages = {}, []
    for instr, rest in instructions:
        if instr == "ARG" and not stages:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
        elif instr == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                           lambda m: args.get(m.group(1) or m.group(2), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), image, name))
        elif stages:
            stages[-1].instructions.append((instr, rest))
            if instr == "WORKDIR":
                stages[-1].workdir = os.path.join(stages[-1].workdir, rest)
    return stages


def shell_segments(command):
    """A RUN's shell command split at && || ; | into token lists (RUN --mount flags dropped)."""
    command = re.sub(r"^(--\S+\s+)+", "", command)
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        if tokens:
            yield tokens


def apt_installs(stage):
    """Packages named after `apt-get install` / `apt install` in a stage's RUNs."""
    pkgs = set()
    for run in stage.runs():
        for tokens in shell_segments(run):
            for i, t in enumerate(tokens):
                if t in ("apt-get", "apt") and "install" in tokens[i + 1:]:
                    after = tokens[tokens.index("install", i) + 1:]
                    pkgs |= {p for p in after if not p.startswith("-") and not p.startswith("$")}
    return pkgs


def runs_script(stage, script):
    pattern = re.compile(r"(^|[\s;&|(])(bash\s+|sh\s+)?(\./)?%s(\s|$|[;&|)])" % re.escape(script))
    return [run for run in stage.runs() if pattern.search(re.sub(r"^(--\S+\s+)+", "", run))]


def exec_form(rest):
    try:
        value = json.loads(rest)
    except ValueError:
        raise AssertionError("expected the exec (JSON array) form, got: " + rest)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AssertionError("expected a JSON array of strings, got: " + rest)
    return value


def flag_values(argv):
    """{name: value} of --name value / --name=value pairs."""
    out, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a[2:].split("=", 1)
                out[k] = v
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[a[2:]] = argv[i + 1]
                i += 1
            else:
                out[a[2:]] = None
        i += 1
    return out


def flag_list(argv):
    return [a[2:].split("=", 1)[0] for a in argv if a.startswith("--")]


class Image:
    """What the Dockerfile says, gathered once."""

    def __init__(self):
        self.stages = dockerfile_stages()
        if len(self.stages) < 2:
            raise AssertionError("deploy/Dockerfile: want a multi-stage build, got %d stage(s)"
                                 % len(self.stages))
        self.build, self.runtime = self.stages[0], self.stages[-1]
        entry = self.runtime.get("ENTRYPOINT")
        if len(entry) != 1:
            raise AssertionError("deploy/Dockerfile: want one ENTRYPOINT in the runtime stage")
        self.entrypoint = exec_form(entry[0])
        cmd = self.runtime.get("CMD")
        self.cmd = exec_form(cmd[-1]) if cmd else []
        self.exposed = set()
        for rest in self.runtime.get("EXPOSE"):
            for p in rest.split():
                self.exposed.add(int(p.split("/")[0]))
        self.env = {}
        for rest in self.runtime.get("ENV"):
            for tok in shlex.split(rest):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    self.env[k] = v
        self.flags = flag_values(self.entrypoint[2:])

    def copies_from_build(self):
        """[(source, destination)] of COPY --from=<build stage> in the runtime stage."""
        names = {str(self.build.index)} | ({self.build.name} if self.build.name else set())
        out = []
        for rest in self.runtime.get("COPY"):
            words = shlex.split(rest)
            opts = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if any(o.split("=", 1)[1] in names for o in opts if o.startswith("--from=")):
                for src in paths[:-1]:
                    dest = paths[-1]
                    if dest.endswith("/"):
                        dest += os.path.basename(src.rstrip("/"))
                    out.append((os.path.normpath(src), os.path.normpath(dest)))
        return out


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
        path = os.path.join(REPO, ".dockerignore")
        self.assertTrue(os.path.exists(path), "no .dockerignore beside the build context root")
        with open(path, encoding="utf-8") as f:
            rules = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        for want in (".git", "build", "build-*"):
            self.assertIn(want, rules, ".dockerignore must exclude " + want)

    @unittest.skipUnless(os.path.exists("/usr/bin/dpkg-query"), "needs dpkg")
    def test_runtime_packages_script_on_the_built_binaries(self):
        if not (PAGODA and SHIM):
            self.skipTest("no --pagoda/--shim given")
        script = os.path.join(REPO, "deploy", "runtime-packages.sh")
        r = subprocess.run(["bash", script, PAGODA, SHIM], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        pkgs = r.stdout.split()
        self.assertIn("libc6", pkgs)
        self.assertTrue(any(p.startswith("libgrpc") for p in pkgs), pkgs)
        self.assertTrue(any(p.startswith("libsentencepiece") for p in pkgs), pkgs)
        self.assertFalse([p for p in pkgs if p.endswith("-dev")], pkgs)


# ---------------------------------------------------------------------------------------------
# Kubernetes

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
                "PodDisruptionBudget": "policy/v1"}


def manifests():
    folder = os.path.join(REPO, "deploy", "kubernetes")
    docs = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append((name, doc, text))
    return docs


class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = Image()
        cls.docs = manifests()
        cls.by_kind = {}
        for name, doc, text in cls.docs:
            cls.by_kind.setdefault(doc.get("kind"), []).append((name, doc, text))
        deployments = cls.by_kind.get("Deployment", [])
        if len(deployments) != 1:
            raise AssertionError("want exactly one Deployment, got %d" % len(deployments))
        cls.deployment_file, cls.deployment, cls.deployment_text = deployments[0]
        pod = cls.deployment["spec"]["template"]
        cls.pod_labels = pod["metadata"].get("labels", {})
        cls.pod_spec = pod["spec"]
        containers = cls.pod_spec["containers"]
        if len(containers) != 1:
            raise AssertionError("want one container in the pod, got %d" % len(containers))
        cls.container = containers[0]
        cls.named_ports = {p["name"]: p["containerPort"] for p in cls.container.get("ports", [])
                           if "name" in p}
        cls.grpc_port = int(cls.image.flags["port"])
        cls.metrics_port = int(cls.image.flags["metrics-port"])

    def port(self, value):
        """A port number, or a named container port resolved."""
        if isinstance(value, int):
            return value
        self.assertIn(value, self.named_ports, "unknown named port " + str(value))
        return self.named_ports[value]

    def one(self, kind, name):
        found = [doc for _, doc, _ in self.by_kind.get(kind, []) if doc["metadata"]["name"] == name]
        self.assertEqual(len(found), 1, "want one %s named %s" % (kind, name))
        return found[0]

    def serve_config(self):
        """(mount path of the config file, its parsed YAML) as the Deployment passes it."""
        args = self.container.get("args", [])
        path = flag_values(args).get("config")
        self.assertIsNotNone(path, "the container args must pass --config FILE")
        for vm in self.container.get("volumeMounts", []):
            vol = [v for v in self.pod_spec.get("volumes", []) if v["name"] == vm["name"]][0]
            if "configMap" not in vol:
                continue
            if vm.get("subPath"):
                if vm["mountPath"] != path:
                    continue
                key = vm["subPath"]
            elif os.path.dirname(path) == vm["mountPath"].rstrip("/"):
                key = os.path.basename(path)
                for item in vol["configMap"].get("items", []):
                    if item["path"] == key:
                        key = item["key"]
            else:
                continue
            cm = self.one("ConfigMap", vol["configMap"]["name"])
            self.assertIn(key, cm.get("data", {}), "ConfigMap %s has no key %s"
                          % (cm["metadata"]["name"], key))
            return path, cm["data"][key]
        self.fail("--config %s is not a file of a mounted ConfigMap" % path)

    def test_manifests_parse_with_expected_kinds(self):
        self.assertTrue(self.docs)
        seen = set()
        for name, doc, _ in self.docs:
            self.assertIsInstance(doc, dict, name)
            kind = doc.get("kind")
            self.assertIn(kind, API_VERSIONS, "%s: unexpected kind %s" % (name, kind))
            self.assertEqual(doc.get("apiVersion"), API_VERSIONS[kind], name)
            meta_name = doc.get("metadata", {}).get("name")
            self.assertTrue(meta_name, name + ": no metadata.name")
            self.assertNotIn((kind, meta_name), seen, "duplicate %s %s" % (kind, meta_name))
            seen.add((kind, meta_name))
        for kind in ("Deployment", "Service", "ConfigMap", "Secret"):
            self.assertIn(kind, self.by_kind, "no " + kind)

    def test_selectors_match_the_pods(self):
        labels = self.pod_labels
        match = self.deployment["spec"]["selector"]["matchLabels"]
        self.assertLessEqual(match.items(), labels.items())
        for _, svc, _ in self.by_kind["Service"]:
            self.assertTrue(svc["spec"].get("selector"))
            self.assertLessEqual(svc["spec"]["selector"].items(), labels.items(),
                                 "Service %s selects no pagoda pod" % svc["metadata"]["name"])
        for _, pdb, _ in self.by_kind.get("PodDisruptionBudget", []):
            self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), labels.items())

    def test_gpu_limit(self):
        res = self.container.get("resources", {})
        self.assertEqual(str(res.get("limits", {}).get("nvidia.com/gpu")), "1",
                         "the container must have the limit nvidia.com/gpu: 1")
        if "nvidia.com/gpu" in res.get("requests", {}):
            self.assertEqual(str(res["requests"]["nvidia.com/gpu"]), "1")

    def test_ports_match_the_image(self):
        ports = {p["containerPort"] for p in self.container.get("ports", [])}
        self.assertEqual(ports, self.image.exposed, "containerPorts differ from the image's EXPOSE")
        self.assertEqual(self.named_ports.get("grpc"), self.grpc_port)
        self.assertEqual(self.named_ports.get("metrics"), self.metrics_port)
        grpc_services = 0
        for _, svc, _ in self.by_kind["Service"]:
            for p in svc["spec"]["ports"]:
                target = self.port(p.get("targetPort", p["port"]))
                self.assertIn(target, ports, "Service %s targets a port the pod does not open"
                              % svc["metadata"]["name"])
                if target == self.grpc_port:
                    grpc_services += 1
                    self.assertEqual(p.get("appProtocol"), "grpc",
                                     "the gRPC Service port needs appProtocol: grpc")
                    self.assertEqual(p["port"], self.grpc_port)
                if target == self.metrics_port:
                    self.assertEqual(p["port"], self.metrics_port)
        self.assertGreaterEqual(grpc_services, 1, "no Service exposes the gRPC port")

    def test_probes_use_the_servers_health_checks(self):
        c = self.container
        self.assertIn("EnableDefaultHealthCheckService(true)", read("server/serve.cc"),
                      "the server no longer runs gRPC's health service")
        live = c.get("livenessProbe", {}).get("grpc")
        self.assertIsNotNone(live, "livenessProbe must be a gRPC probe")
        self.assertEqual(live["port"], self.grpc_port)  # gRPC probes take numbers only
        self.assertEqual(live.get("service", ""), "", "liveness is the health service \"\"")
        ready = c.get("readinessProbe", {}).get("grpc")
        self.assertIsNotNone(ready, "readinessProbe must be a gRPC probe")
        self.assertEqual(ready["port"], self.grpc_port)
        self.assertEqual(ready.get("service"), readiness_service(),
                         "readiness must ask for the service the server reports readiness on")
        routes = http_routes()
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            http = c.get(probe, {}).get("httpGet")
            if http:
                self.assertIn(http["path"], routes, "%s asks for a path the server lacks" % probe)
                self.assertEqual(self.port(http["port"]), self.metrics_port)
        start = c.get("startupProbe")
        self.assertIsNotNone(start, "a startupProbe must cover model loading")
        self.assertEqual(start.get("httpGet", {}).get("path"), "/readyz")
        budget = start.get("failureThreshold", 3) * start.get("periodSeconds", 10)
        self.assertGreaterEqual(budget, 300, "the startupProbe allows model loading only %d s"
                                % budget)

    def test_prometheus_annotations(self):
        ann = self.deployment["spec"]["template"]["metadata"].get("annotations", {})
        self.assertEqual(ann.get("prometheus.io/scrape"), "true")
        self.assertEqual(ann.get("prometheus.io/port"), str(self.metrics_port))
        self.assertEqual(ann.get("prometheus.io/path"), "/metrics")
        self.assertIn("/metrics", http_routes())

    def test_args_are_serve_flags_and_do_not_repeat_the_entrypoints(self):
        args = self.container.get("args", [])
        self.assertNotIn("command", self.container, "command would replace the image's "
                         "ENTRYPOINT and its fixed addresses")
        known = serve_names("serve_flag_names") | serve_names("serve_switch_names") | {"config"}
        for name in flag_list(args):
            self.assertIn(name, known, "--%s is not a flag of pagoda serve" % name)
            self.assertNotIn(name, FIXED_FLAGS, "--%s is fixed by the ENTRYPOINT already "
                             "(pagoda rejects a flag given twice)" % name)

    def test_config_keys_are_serve_flags(self):
        path, text = self.serve_config()
        config = yaml.safe_load(text)
        self.assertIsInstance(config, dict, "the serve config must be a mapping")
        known = serve_names("serve_flag_names")
        self.assertIn("drain-timeout", known, "parsing serve_flag_names() went wrong")
        for key, value in config.items():
            flag = str(key).replace("_", "-")
            self.assertIn(flag, known, "config key %r is not a flag of pagoda serve" % key)
            self.assertNotIn(flag, FIXED_FLAGS, "config key %r is overridden by the ENTRYPOINT"
                             % key)
            self.assertFalse(isinstance(value, (dict, list)),
                             "config key %r must be a scalar" % key)
        model = config.get("model")
        if model is not None:
            mounts = [vm["mountPath"] for vm in self.container.get("volumeMounts", [])]
            self.assertTrue(any(model == m or model.startswith(m.rstrip("/") + "/")
                                for m in mounts), "model %s is on no mounted volume" % model)

    def test_grace_period_exceeds_prestop_and_drain(self):
        _, text = self.serve_config()
        config = yaml.safe_load(text)
        drain = float(config.get("drain-timeout", config.get("drain_timeout", serve_default(
            "drain_timeout_seconds", r"double drain_timeout_seconds = ([\d.]+);"))))
        pause = 0.0
        pre = self.container.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre:
            pause = float(pre["sleep"]["seconds"])
        elif "exec" in pre:
            cmd = pre["exec"]["command"]
            m = re.search(r"\bsleep\s+([\d.]+)", " ".join(cmd))
            self.assertIsNotNone(m, "unrecognised preStop command %s" % cmd)
            pause = float(m.group(1))
        grace = self.pod_spec.get("terminationGracePeriodSeconds", 30)
        self.assertGreater(grace, pause + drain,
                           "terminationGracePeriodSeconds %s must exceed preStop %s s + "
                           "drain-timeout %s s" % (grace, pause, drain))

    def test_keys_secret_mounted_and_keys_file_flag_documented(self):
        secret_mounts = {}
        for vol in self.pod_spec.get("volumes", []):
            if "secret" in vol:
                self.one("Secret", vol["secret"]["secretName"])
                for vm in self.container.get("volumeMounts", []):
                    if vm["name"] == vol["name"]:
                        secret_mounts[vol["secret"]["secretName"]] = vm["mountPath"]
        self.assertTrue(secret_mounts, "the keys Secret must be mounted")
        secret_name, mount = next(iter(secret_mounts.items()))
        keys = list(self.one("Secret", secret_name).get("stringData", {})) + \
            list(self.one("Secret", secret_name).get("data", {}))
        self.assertTrue(keys, "the Secret holds no keys file")
        keys_path = mount.rstrip("/") + "/" + keys[0]
        if "keys-file" in serve_names("serve_flag_names"):
            # Authentication has landed: the args must pass the keys file for real.
            self.assertEqual(flag_values(self.container.get("args", [])).get("keys-file"),
                             keys_path, "pagoda serve has --keys-file now: pass it in the args")
        else:
            commented = r"#\s*-\s*--keys-file\s*\n\s*#\s*-\s*" + re.escape(keys_path)
            self.assertTrue(re.search(commented, self.deployment_text),
                            "%s: the args must carry the (commented) --keys-file %s"
                            % (self.deployment_file, keys_path))

    def test_pagoda_accepts_the_deployed_config(self):
        if not PAGODA:
            self.skipTest("no --pagoda given")
        _, text = self.serve_config()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "serve.yaml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            # The command line the pod runs, with the config at a local path and --metrics-port
            # made invalid: parsed last, it fails only once everything else has been accepted.
            argv = list(self.image.entrypoint[1:])
            i = argv.index("--metrics-port")
            argv[i + 1] = "-5"
            args = list(self.container.get("args", []))
            args[args.index("--config") + 1] = path
            r = subprocess.run([PAGODA] + argv + args, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--metrics-port must be", r.stderr,
                      "pagoda rejected the deployed command line before reaching --metrics-port: "
                      + r.stderr)


def main():
    global REPO, PAGODA, SHIM
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--repo", default=REPO)
    parser.add_argument("--pagoda")
    parser.add_argument("--shim")
    known, rest = parser.parse_known_args()
    REPO, PAGODA, SHIM = os.path.abspath(known.repo), known.pagoda, known.shim
    unittest.main(argv=[sys.argv[0]] + rest)


if __name__ == "__main__":
    main()

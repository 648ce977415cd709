"""What tests/deploy's checks read from the project: the packages of scripts/setup.sh, the
flags and defaults of `pagoda serve` (from server/ sources), the Dockerfile's stages and the
image's command line. Set REPO, PAGODA and SHIM with parse_args() before use."""
import argparse
import json
import os
import re
import shlex
import sys

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




def parse_args(argv):
    """Takes --repo, --pagoda and --shim out of argv; returns the rest (for unittest)."""
    global REPO, PAGODA, SHIM
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--repo", default=REPO)
    parser.add_argument("--pagoda")
    parser.add_argument("--shim")
    known, rest = parser.parse_known_args(argv)
    REPO, PAGODA, SHIM = os.path.abspath(known.repo), known.pagoda, known.shim
    return rest

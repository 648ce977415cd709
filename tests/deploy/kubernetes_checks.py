"""The Kubernetes half of tests/deploy: deploy/kubernetes/*.yaml against the server's ports,
probes, flags and drain timeout (see test_deploy.py for the whole list)."""
import os
import re
import subprocess
import tempfile
import unittest

import deploy_support as support
from deploy_support import (
    FIXED_FLAGS, Image, flag_list, flag_values, http_routes, read, readiness_service,
    serve_default, serve_names, yaml)

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
                "PodDisruptionBudget": "policy/v1"}


def manifests():
    folder = os.path.join(support.REPO, "deploy", "kubernetes")
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
        if not support.PAGODA:
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
            r = subprocess.run([support.PAGODA] + argv + args, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--metrics-port must be", r.stderr,
                      "pagoda rejected the deployed command line before reaching --metrics-port: "
                      + r.stderr)

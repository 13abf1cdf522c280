"""The shipped examples load the way their engines load them (without the engines)."""

from __future__ import annotations

import importlib
import importlib.util
import py_compile
import re
import shutil
import subprocess
import unittest
from pathlib import Path

from therapygym_adapters import openrlhf as ora
from therapygym_adapters.verl import TherapyInteraction

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class ExamplesTest(unittest.TestCase):
    def test_openrlhf_agent_file_loads_like_openrlhf_loads_it(self):
        # openrlhf/trainer/ray/vllm_engine.py::_load_agent_executor (0.11.0)
        spec = importlib.util.spec_from_file_location("agent_module", EXAMPLES / "openrlhf" / "therapy_agent.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cls = module.AgentExecutor
        self.assertTrue(issubclass(cls, ora._MultiTurnAgentExecutor))
        executor = cls()
        self.assertTrue(issubclass(executor.agent_instance_cls, ora.TherapyAgentInstance))
        cfg = executor.agent_instance_cls.config
        self.assertEqual(cfg.template.name, "chatml")
        self.assertEqual(dict(cfg.limits), {"max_therapist_turns": 5, "max_total_tokens": 12288})

    def test_verl_interaction_yaml_names_an_importable_class(self):
        text = (EXAMPLES / "verl" / "therapy_interaction.yaml").read_text()
        names = re.findall(r"class_name:\s*(\S+)", text)
        self.assertEqual(names, ["therapygym_adapters.verl.TherapyInteraction"])
        module, _, cls = names[0].rpartition(".")
        self.assertIs(getattr(importlib.import_module(module), cls), TherapyInteraction)
        self.assertIn("name: therapy", text)

    def test_scripts_parse(self):
        py_compile.compile(str(EXAMPLES / "trl" / "train_trl_grpo.py"), doraise=True)
        bash = shutil.which("bash")
        self.assertIsNotNone(bash, "bash is needed to check the launch scripts")
        for script in sorted(EXAMPLES.glob("*/*.sh")):
            r = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{script}: {r.stderr}")


if __name__ == "__main__":
    unittest.main()


class ScaleDocTest(unittest.TestCase):
    """docs/scale.md's Kubernetes manifest and SLURM script are well-formed."""

    DOC = Path(__file__).resolve().parents[3] / "docs" / "scale.md"

    def blocks(self, lang):
        return re.findall(r"```" + lang + r"\n(.*?)```", self.DOC.read_text(), re.S)

    def test_slurm_and_merge_scripts_parse_as_bash(self):
        blocks = self.blocks("bash")
        self.assertGreaterEqual(len(blocks), 2)
        for b in blocks:
            subprocess.run(["bash", "-n"], input=b, text=True, check=True)
        self.assertIn("#SBATCH --array=0-15", blocks[0])
        self.assertIn("--shard auto/16", blocks[0])

    def test_indexed_job_manifest_is_a_kubernetes_indexed_job(self):
        (text,) = self.blocks("yaml")
        try:
            import yaml
        except ImportError:
            # Without PyYAML: at least the keys the Job needs, at their indentation.
            for line in ("kind: Job", "  completionMode: Indexed", "  completions: 16"):
                self.assertIn(line + "\n", text)
            return
        job = yaml.safe_load(text)
        self.assertEqual((job["apiVersion"], job["kind"]), ("batch/v1", "Job"))
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        (container,) = spec["template"]["spec"]["containers"]
        self.assertIn("--shard auto/16", container["args"][0])
        self.assertEqual(spec["completions"], 16)

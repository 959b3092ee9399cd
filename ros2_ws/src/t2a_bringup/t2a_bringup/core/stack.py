"""The stack description (``config/stack.yaml``) resolved into the nodes to start, ROS-free.

Both starters go through this module, so they start the same nodes with the same parameters:
``launch/*.launch.py`` turn each :class:`NodeSpec` into a ``launch_ros`` Node with
:func:`launch_kwargs`, ``t2a-stack`` runs :func:`command_line`; both pass the parameter file that
:func:`write_params_files` writes. The flow is::

    desc = load_description()                       # parse + check the structure
    nodes = desc.resolve("sim", {"task": "box_push"}, ["planner.planner.min_support=0.3"])
    nodes = check_nodes(nodes)                      # every parameter is a config field (the
                                                    # packages' core config dataclasses, no rclpy)
    files = write_params_files(nodes, directory)
    cmd = command_line(nodes[0], files[nodes[0].key], executable)

Parameter names are dotted (``control.mode``), as the nodes declare them; the files nest them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from t2a_common.core import config as cfgmod

SRC_DIR = Path(__file__).resolve().parents[3]  # ros2_ws/src in a source checkout
PACKAGE = "t2a_bringup"
DESCRIPTION_FILE = "config/stack.yaml"
ARG_TYPES = ("str", "bool", "int", "float", "list")
# Parameters every ROS node has besides those of its config dataclass.
STANDARD_PARAMETERS = frozenset({"use_sim_time"})

_NODE_KEYS = {
    "package", "executable", "name", "namespace", "config", "include", "parameters",
    "remappings", "arguments", "param_files", "external", "optional", "enabled", "doc",
}  # fmt: skip
_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?\}")


class StackError(ValueError):
    """The description, an argument or an override is wrong; the message says what and where."""


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Argument:
    """A launch argument: ``--arg NAME:=VALUE`` for t2a-stack, ``NAME:=VALUE`` for ros2 launch."""

    name: str
    default: Any
    doc: str
    type: str  # one of ARG_TYPES

    def parse(self, value: Any) -> Any:
        """The typed value of ``value`` (launch arguments arrive as text)."""
        where = f"argument {self.name!r}"
        if self.type == "str":
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
            raise StackError(f"{where}: expected text, got {value!r}")
        if isinstance(value, str):
            text = value.strip()
            if self.type == "bool":
                if text.lower() in ("true", "false"):
                    return text.lower() == "true"
                raise StackError(f"{where}: expected true or false, got {value!r}")
            try:
                value = yaml.safe_load(text) if text else None
            except yaml.YAMLError as exc:
                raise StackError(f"{where}: cannot parse {value!r}: {exc}") from exc
        if self.type == "bool" and isinstance(value, bool):
            return value
        if self.type == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.type == "float" and _is_number(value):
            return float(value)
        if self.type == "list" and isinstance(value, (list, tuple)) and all(map(_scalar, value)):
            return [float(v) if _is_number(v) else v for v in value]
        expected = {"bool": "true or false", "int": "an integer", "float": "a number",
                    "list": "a list like [1.0, 2.0]"}[self.type]  # fmt: skip
        raise StackError(f"{where}: expected {expected}, got {value!r}")

    @property
    def default_text(self) -> str:
        """The default as launch argument text (``true``, ``[0.1, 0.2]``, ``spot``)."""
        return format_value(self.default)


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node to start, fully resolved (no ``${...}`` left)."""

    key: str  # the description's key: what --only and --set name
    package: str
    executable: str
    name: str
    namespace: str  # absolute: "/" or "/t2a"
    parameters: dict[str, Any]  # dotted name -> value, in the order they were set
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()  # before --ros-args
    param_files: tuple[str, ...] = ()  # user files, given before the generated one
    config: str = ""  # "module:Class" of the config dataclass; "" = not checked
    external: bool = False  # not a t2a node (realsense2_camera, spot_ros2, tf2_ros)
    optional: bool = False  # t2a-stack skips it where it is not installed

    @property
    def fqn(self) -> str:
        """Fully qualified node name, the key of its parameter file (``/t2a/planner``)."""
        return self.namespace.rstrip("/") + "/" + self.name


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def share_dir(package: str) -> Path:
    """``share/<package>`` of the first AMENT_PREFIX_PATH entry that has it, else the source
    tree's package folder (a checkout used without an install)."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / "share" / package
        if (candidate / "package.xml").exists():
            return candidate
    candidate = SRC_DIR / package
    if (candidate / "package.xml").exists():
        return candidate
    raise StackError(
        f"package {package!r} not found: no share/{package} under AMENT_PREFIX_PATH "
        f"({os.environ.get('AMENT_PREFIX_PATH', '')!r}) nor {candidate} (source the workspace)"
    )


def description_path() -> Path:
    """The installed (or source-tree) ``t2a_bringup/config/stack.yaml``."""
    return share_dir(PACKAGE) / DESCRIPTION_FILE


def load_description(path: str | Path | None = None) -> StackDescription:
    """Read and check a stack description (default: :func:`description_path`)."""
    path = Path(path) if path else description_path()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"cannot read stack description {path}: {exc}") from exc
    return StackDescription(data, str(path))


class StackDescription:
    """A parsed stack description; :meth:`resolve` turns a profile into :class:`NodeSpec` s."""

    def __init__(self, data: Any, source: str = "<description>"):
        self.source = source
        if not isinstance(data, dict):
            raise StackError(f"{source}: expected a mapping with arguments, nodes and profiles")
        unknown = set(data) - {"version", "arguments", "nodes", "profiles"}
        if unknown:
            raise StackError(
                f"{source}: unknown top-level key(s) {sorted(unknown)}; expected version, "
                "arguments, nodes, profiles"
            )
        self._args = self._parse_arguments(data.get("arguments") or {}, "arguments")
        self.nodes: dict[str, dict[str, Any]] = dict(data.get("nodes") or {})
        for key, node in self.nodes.items():
            self._check_node(key, node)
        self._profiles: dict[str, dict[str, Any]] = {}
        for name, prof in (data.get("profiles") or {}).items():
            self._profiles[name] = self._check_profile(name, prof)
        if not self._profiles:
            raise StackError(f"{source}: no profiles")

    # -------------------------------------------------------------- structure checks
    def _parse_arguments(self, raw: Any, where: str, base: dict | None = None) -> dict:
        if not isinstance(raw, dict):
            raise StackError(f"{self.source}: {where} must be a mapping NAME: {{default, doc}}")
        out = dict(base or {})
        for name, spec in raw.items():
            if not isinstance(spec, dict) or not set(spec) <= {"default", "doc", "type"}:
                raise StackError(
                    f"{self.source}: {where}.{name} must be a mapping with default, doc and "
                    f"optionally type, got {spec!r}"
                )
            prev = out.get(name)
            if "default" not in spec and prev is None:
                raise StackError(f"{self.source}: {where}.{name} has no default")
            default = spec["default"] if "default" in spec else prev.default
            typ = spec.get("type") or (prev.type if prev else _type_of(default))
            if typ not in ARG_TYPES:
                raise StackError(
                    f"{self.source}: {where}.{name}: type {typ!r}, expected {ARG_TYPES}"
                )
            doc = spec.get("doc") or (prev.doc if prev else "")
            if not doc:
                raise StackError(f"{self.source}: {where}.{name} needs a doc (say the unit)")
            arg = Argument(name, None, doc, typ)
            out[name] = dataclasses.replace(arg, default=arg.parse(default))
        return out

    def _check_node(self, key: str, node: Any) -> None:
        where = f"{self.source}: node {key!r}"
        if not isinstance(node, dict):
            raise StackError(f"{where} must be a mapping")
        unknown = set(node) - _NODE_KEYS
        if unknown:
            raise StackError(
                f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(_NODE_KEYS)}"
            )
        for field in ("package", "executable"):
            if not node.get(field):
                raise StackError(f"{where} needs {field}")
        if not node.get("external") and not node.get("config"):
            raise StackError(
                f"{where}: a t2a node needs config: 'module:Class' (its config dataclass) so "
                "its parameters can be checked; mark other nodes external: true"
            )
        for field, typ in (("parameters", dict), ("remappings", dict), ("arguments", list),
                           ("param_files", list), ("include", list)):  # fmt: skip
            if not isinstance(node.get(field, typ()), typ):
                raise StackError(f"{where}: {field} must be a {typ.__name__}")
        for inc in node.get("include", []):
            keys = set(inc) if isinstance(inc, dict) else set()
            if not {"package", "file"} <= keys <= {"package", "file", "under"}:
                raise StackError(
                    f"{where}: include entries are {{package, file[, under]}}, got {inc!r}"
                )

    def _check_profile(self, name: str, prof: Any) -> dict[str, Any]:
        where = f"{self.source}: profile {name!r}"
        if not isinstance(prof, dict) or not set(prof) <= {"doc", "arguments", "nodes"}:
            raise StackError(f"{where} must be a mapping with doc, arguments, nodes")
        args = self._parse_arguments(prof.get("arguments") or {}, f"profiles.{name}.arguments",
                                     self._args)  # fmt: skip
        keys = list(prof.get("nodes") or [])
        if not keys:
            raise StackError(f"{where} lists no nodes")
        missing = [k for k in keys if k not in self.nodes]
        if missing:
            raise StackError(f"{where} lists unknown node(s) {missing}; nodes: {list(self.nodes)}")
        if len(set(keys)) != len(keys):
            raise StackError(f"{where} lists a node twice: {keys}")
        for key in keys:
            for var in sorted(_variables(self.nodes[key])):
                if var not in args:
                    raise StackError(
                        f"{where}: node {key!r} uses ${{{var}}}, which is not an argument of this "
                        f"profile ({sorted(args)})"
                    )
        return {"doc": prof.get("doc", ""), "arguments": args, "nodes": keys}

    # -------------------------------------------------------------- queries
    @property
    def profiles(self) -> list[str]:
        """Profile names in file order."""
        return list(self._profiles)

    def profile_doc(self, profile: str) -> str:
        return self._profile(profile)["doc"]

    def arguments(self, profile: str) -> list[Argument]:
        """The launch arguments of ``profile`` (shared ones, then the profile's own)."""
        return list(self._profile(profile)["arguments"].values())

    def node_keys(self, profile: str) -> list[str]:
        return list(self._profile(profile)["nodes"])

    def _profile(self, profile: str) -> dict[str, Any]:
        if profile not in self._profiles:
            raise StackError(f"no profile {profile!r} in {self.source}; profiles: {self.profiles}")
        return self._profiles[profile]

    # -------------------------------------------------------------- resolution
    def resolve(
        self,
        profile: str,
        args: Mapping[str, Any] | None = None,
        sets: Iterable[str] | Mapping[str, Any] = (),
    ) -> list[NodeSpec]:
        """The nodes of ``profile`` with argument values ``args`` (text or typed; missing ones
        take their defaults) and ``sets``: ``"node.param=value"`` strings (value parsed as YAML,
        like ``-p``) or a ``{"node.param": value}`` mapping, applied last."""
        prof = self._profile(profile)
        declared: dict[str, Argument] = prof["arguments"]
        unknown = sorted(set(args or {}) - set(declared))
        if unknown:
            raise StackError(
                f"unknown argument(s) {unknown} for profile {profile!r}; "
                f"arguments: {sorted(declared)}"
            )
        values = {
            n: a.parse(args[n]) if args and n in args else a.default for n, a in declared.items()
        }
        overrides = _parse_sets(sets, prof["nodes"], profile)
        out = []
        for key in prof["nodes"]:
            spec = self._resolve_node(key, values)
            if spec is None:
                if overrides.get(key):
                    raise StackError(f"--set {key}.*: node {key!r} is disabled in this run")
                continue
            spec.parameters.update(overrides.get(key, {}))
            out.append(spec)
        return out

    def _resolve_node(self, key: str, values: dict[str, Any]) -> NodeSpec | None:
        node = self.nodes[key]

        def sub(value: Any, what: str) -> Any:
            return _substitute(value, values, f"node {key!r} {what}")

        if "enabled" in node:
            enabled = sub(node["enabled"], "enabled")
            if not isinstance(enabled, bool):
                raise StackError(f"node {key!r}: enabled must give true/false, got {enabled!r}")
            if not enabled:
                return None
        params: dict[str, Any] = {}
        for inc in node.get("include", []):
            under = f"{inc['under']}." if inc.get("under") else ""
            for name, value in _read_include(inc, f"node {key!r}").items():
                params[under + name] = value
        for name, value in _flatten(node.get("parameters", {})).items():
            params[name] = sub(value, f"parameter {name!r}")
        name = str(sub(node.get("name", key), "name"))
        namespace = "/" + str(sub(node.get("namespace", "/"), "namespace")).strip("/")
        remaps = tuple(
            (str(sub(a, "remap")), str(sub(b, "remap")))
            for a, b in node.get("remappings", {}).items()
        )
        arguments = tuple(format_value(sub(a, "arguments")) for a in node.get("arguments", []))
        files = tuple(
            str(f) for f in (sub(f, "param_files") for f in node.get("param_files", [])) if f
        )
        return NodeSpec(
            key=key,
            package=node["package"],
            executable=node["executable"],
            name=name,
            namespace=namespace,
            parameters=params,
            remappings=remaps,
            arguments=arguments,
            param_files=files,
            config=node.get("config", ""),
            external=bool(node.get("external", False)),
            optional=bool(node.get("optional", False)),
        )


# ---------------------------------------------------------------------------------------------
# Checking against the nodes' config dataclasses
# ---------------------------------------------------------------------------------------------


def config_class(spec: NodeSpec) -> type | None:
    """The config dataclass named by ``spec.config``, from a package's ROS-free ``core``: checking
    parameters never imports a node module (and with it rclpy and the message packages)."""
    if not spec.config:
        return None
    module, _, cls = spec.config.partition(":")
    if ".core." not in f"{module}.":
        raise StackError(
            f"node {spec.key!r}: config class {spec.config!r} is not in a package's core; "
            "expected <package>.core.<module>:<Class> (e.g. t2a_planning.core.node_config:"
            "PlannerNodeConfig), so that checking parameters does not import rclpy"
        )
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise StackError(
            f"node {spec.key!r}: cannot load config class {spec.config!r}: {exc}"
        ) from exc


def check_parameters(spec: NodeSpec, cls: type) -> NodeSpec:
    """``spec`` with its parameters checked against config dataclass ``cls`` and converted to
    the declared types (ints given for float fields become floats, as ROS requires).

    Raises :class:`StackError` naming the node and the key for an unknown parameter, a wrong
    type or a value the dataclass rejects.
    """
    specs = {f.name: f for f in cfgmod.fields(cls)}
    own = {k: v for k, v in spec.parameters.items() if k not in STANDARD_PARAMETERS}
    for key in own:
        if key not in specs:
            close = difflib.get_close_matches(key, list(specs), n=3)
            hint = f"; did you mean {close}?" if close else f"; known: {sorted(specs)}"
            raise StackError(
                f"node {spec.key!r} ({spec.fqn}): unknown parameter {key!r}, not a field of "
                f"{cls.__name__}{hint}"
            )
    try:
        cfgmod.from_dict(cls, own)
    except ValueError as exc:
        raise StackError(f"node {spec.key!r} ({spec.fqn}): invalid parameters: {exc}") from exc
    sim_time = spec.parameters.get("use_sim_time", False)
    if not isinstance(sim_time, bool):
        raise StackError(f"node {spec.key!r}: use_sim_time must be true/false, got {sim_time!r}")
    params = {k: _as_declared(specs[k], v) if k in own else v for k, v in spec.parameters.items()}
    return dataclasses.replace(spec, parameters=params)


def _as_declared(field: cfgmod.FieldSpec, value: Any) -> Any:
    """A validated value with ints widened to floats where the field is a float, as the node
    declares it (rclpy refuses ``1`` from a parameter file for a double parameter)."""
    if field.type is float:
        return float(value)
    if field.elem_type is float:
        return [float(v) for v in value]
    return list(value) if isinstance(value, tuple) else value


def check_nodes(nodes: list[NodeSpec]) -> list[NodeSpec]:
    """:func:`check_parameters` for every node that names a config class."""
    return [check_parameters(n, cls) if (cls := config_class(n)) else n for n in nodes]


# ---------------------------------------------------------------------------------------------
# What the starters need
# ---------------------------------------------------------------------------------------------


def params_document(spec: NodeSpec) -> dict[str, Any]:
    """The ROS 2 parameter file content of ``spec``: ``{fqn: {ros__parameters: {nested}}}``."""
    for name, value in spec.parameters.items():
        if isinstance(value, (list, tuple)) and not value:
            raise StackError(
                f"node {spec.key!r} parameter {name!r}: an empty list cannot be written to a ROS 2 "
                "parameter file (its type would be unknown); leave the parameter out instead"
            )
    return {spec.fqn: {"ros__parameters": _nest(spec.parameters)}}


def write_params_files(nodes: list[NodeSpec], directory: str | Path) -> dict[str, Path | None]:
    """One ``<key>.params.yaml`` per node with parameters (None for nodes without any)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path | None] = {}
    for spec in nodes:
        if not spec.parameters:
            out[spec.key] = None
            continue
        path = directory / f"{spec.key}.params.yaml"
        path.write_text(
            f"# written by t2a_bringup.core.stack from the stack description; node {spec.fqn}\n"
            + yaml.dump(params_document(spec), Dumper=_ParamsDumper, sort_keys=False)
        )
        out[spec.key] = path
    return out


class _ParamsDumper(yaml.SafeDumper):
    """Block mappings, one-line lists: ``arm_kp: [1500.0, 1500.0, ...]``."""


_ParamsDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def command_line(spec: NodeSpec, params_file: str | Path | None, executable: str) -> list[str]:
    """``<executable> [arguments] --ros-args -r __node:=.. -r __ns:=.. --params-file F -r a:=b``."""
    cmd = [executable, *spec.arguments, "--ros-args",
           "-r", f"__node:={spec.name}", "-r", f"__ns:={spec.namespace}"]  # fmt: skip
    for f in [*spec.param_files, *([params_file] if params_file else [])]:
        cmd += ["--params-file", str(f)]
    for a, b in spec.remappings:
        cmd += ["-r", f"{a}:={b}"]
    return cmd


def launch_kwargs(spec: NodeSpec, params_file: str | Path | None) -> dict[str, Any]:
    """Keyword arguments of ``launch_ros.actions.Node`` for ``spec``."""
    files = [*spec.param_files, *([str(params_file)] if params_file else [])]
    return {
        "package": spec.package,
        "executable": spec.executable,
        "name": spec.name,
        "namespace": spec.namespace,
        "parameters": files,
        "remappings": list(spec.remappings),
        "arguments": list(spec.arguments),
        "output": "screen",
    }


def find_executable(package: str, executable: str) -> str | None:
    """``<prefix>/lib/<package>/<executable>`` for the AMENT_PREFIX_PATH entries (where colcon
    and apt put node executables), then ``executable`` on PATH (pip console scripts)."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / "lib" / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(executable)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def _type_of(value: Any) -> str:
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, typ):
            return name
    if isinstance(value, list):
        return "list"
    raise StackError(f"argument default {value!r}: expected text, a number, true/false or a list")


def format_value(value: Any) -> str:
    """Argument text of a value: ``true``, ``[0.1, 0.2]``, ``spot``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _variables(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m.group(1) for m in _SUBST.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(_variables(k) | _variables(v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_variables(v) for v in value))
    return set()


def _substitute(value: Any, values: dict[str, Any], where: str) -> Any:
    """``"${a}"`` -> the typed value of a; ``"x${a}y"`` -> text; lists element-wise."""
    if isinstance(value, list):
        return [_substitute(v, values, where) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(m: re.Match) -> Any:
        name, index = m.group(1), m.group(2)
        if name not in values:
            raise StackError(f"{where}: ${{{name}}} is not an argument ({sorted(values)})")
        v = values[name]
        if index is None:
            return v
        if not isinstance(v, list) or int(index) >= len(v):
            raise StackError(
                f"{where}: ${{{name}[{index}]}}: {name} = {v!r} has no element {index}"
            )
        return v[int(index)]

    whole = _SUBST.fullmatch(value)
    if whole:
        return lookup(whole)
    return _SUBST.sub(lambda m: format_value(lookup(m)), value)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *path, leaf = name.split(".")
        d = out
        for part in path:
            d = d.setdefault(part, {})
            if not isinstance(d, dict):
                raise StackError(f"parameter {name!r}: {part!r} is both a value and a group")
        if isinstance(d.get(leaf), dict):
            raise StackError(f"parameter {name!r} is both a value and a group")
        d[leaf] = list(value) if isinstance(value, tuple) else value
    return out


def _read_include(inc: dict[str, str], where: str) -> dict[str, Any]:
    """Parameters of a package YAML: a plain mapping, or a ROS 2 parameter file with ``/**``
    and at most one node entry (its name does not matter: ``under`` says where it goes)."""
    path = share_dir(inc["package"]) / inc["file"]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{where}: cannot read include {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StackError(f"{where}: include {path} is not a mapping")
    if not any(isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
        return _flatten(data)
    names = [k for k in data if k not in ("/**", "**")]
    if len(names) > 1:
        raise StackError(f"{where}: include {path} has parameters for several nodes {names}")
    return cfgmod.ros_params_section(data, names[0] if names else None)


def _parse_sets(
    sets: Iterable[str] | Mapping[str, Any], keys: list[str], profile: str
) -> dict[str, dict[str, Any]]:
    items: list[tuple[str, Any]] = []
    if isinstance(sets, Mapping):
        items = list(sets.items())
    else:
        for text in sets:
            target, eq, raw = text.partition("=")
            if not eq or "." not in target:
                raise StackError(
                    f"--set {text!r}: expected NODE.PARAM=VALUE, e.g. planner.spot_name=spot"
                )
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                raise StackError(f"--set {text!r}: cannot parse the value: {exc}") from exc
            items.append((target, value))
    out: dict[str, dict[str, Any]] = {}
    for target, value in items:
        key, _, param = target.partition(".")
        if key not in keys:
            raise StackError(
                f"--set {target}: no node {key!r} in profile {profile!r}; nodes: {keys}"
            )
        if not param:
            raise StackError(f"--set {target}: no parameter name after {key!r}.")
        if isinstance(value, dict):
            raise StackError(
                f"--set {target}: set one parameter at a time, got a mapping {value!r}"
            )
        out.setdefault(key, {})[param] = value
    return out

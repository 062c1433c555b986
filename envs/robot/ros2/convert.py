"""ROS 2 messages <-> numpy, and the registry of topic converters the bridge is configured with.

Images (sensor_msgs/Image) follow REP 118 for depth: 16UC1 / mono16 are millimetres with 0 meaning
"no return"; 32FC1 is metres with NaN "no return", +inf "too far" and -inf "too close". Row padding
(`step` > width x pixel size) and big-endian data are handled. Everything a converter rejects raises
`ConversionError` (or ValueError) with what was wrong and what was expected; the bridge drops it.

A converter turns one message into one observation value: `converter(msg) -> ndarray | str`.
Built-in ones are named in config (`converter: rgb`, with `args:`); any other is a user-written
function named by dotted path (`my_pkg.my_module:function` or `my_pkg.my_module.function`) called
as `function(msg, **args)`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


class ConversionError(ValueError):
    """A message that cannot become the observation value (or the command) it is configured for."""


# encoding -> (element dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4), "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1), "8UC1": (np.dtype(np.uint8), 1), "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1), "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


# -- images -------------------------------------------------------------------------------------
def image_to_array(msg: Image) -> np.ndarray:
    """The pixels of an Image as (H, W, C) or (H, W) in the encoding's dtype (native byte order)."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ConversionError(f"image encoding {enc!r} is not supported; expected one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * dtype.itemsize
    if h <= 0 or w <= 0:
        raise ConversionError(f"image is {h}x{w}; expected a positive height and width")
    if step < row:
        raise ConversionError(f"image step {step} bytes < width {w} x {channels} channel(s) x "
                              f"{dtype.itemsize} bytes = {row} for {enc}")
    data = np.frombuffer(msg.data, np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if data.size != step * h:
        raise ConversionError(f"image data has {data.size} bytes; expected step {step} x height {h} = "
                              f"{step * h} for a {h}x{w} {enc} image")
    rows = data.reshape(h, step)[:, :row]  # drop row padding
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype)
    return pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)


def array_to_image(pixels: np.ndarray, encoding: str, stamp: Any = None, frame_id: str = "",
                   bigendian: bool = False) -> Image:
    """(H, W, C) or (H, W) pixels -> Image; the array's dtype and channels must fit `encoding`."""
    if encoding not in ENCODINGS:
        raise ConversionError(f"image encoding {encoding!r} is not supported; expected one of {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(pixels)
    want = 2 if channels == 1 else 3
    if arr.ndim != want or (channels > 1 and arr.shape[2] != channels) or arr.dtype != dtype:
        shape = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ConversionError(f"{encoding} needs a {shape} {dtype} array, got {arr.shape} {arr.dtype}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding, msg.is_bigendian = encoding, int(bigendian)
    msg.step = int(arr.shape[1] * channels * dtype.itemsize)
    msg.data = arr.astype(dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    return msg


def resize_nearest(img: np.ndarray, size: Sequence[int] | None) -> np.ndarray:
    """Nearest-neighbour resize of (H, W, ...) to `size` = (H', W'); None or the same size: unchanged."""
    if size is None or tuple(img.shape[:2]) == tuple(size):
        return img
    h, w = int(size[0]), int(size[1])
    rows = (np.arange(h) * img.shape[0] // h).clip(0, img.shape[0] - 1)
    cols = (np.arange(w) * img.shape[1] // w).clip(0, img.shape[1] - 1)
    return np.ascontiguousarray(img[rows][:, cols])


def rgb(msg: Image, size: Sequence[int] | None = None) -> np.ndarray:
    """Image -> (H, W, 3) uint8 RGB. bgr8/bgra8 are swapped to RGB, alpha dropped, mono repeated."""
    pixels = image_to_array(msg)
    enc = msg.encoding
    if pixels.dtype != np.uint8:
        raise ConversionError(f"rgb needs an 8-bit colour or mono image (rgb8, bgr8, rgba8, bgra8, mono8), "
                              f"got {enc}")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    elif enc in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]  # (H, W, 3): B G R -> R G B, alpha dropped
    else:
        pixels = pixels[..., :3]
    return resize_nearest(np.ascontiguousarray(pixels), size)


def depth(msg: Image, max_depth: float = 2.0, missing: float | None = None,
          size: Sequence[int] | None = None) -> np.ndarray:
    """Image -> (H, W) float32 metres in [0, max_depth] (REP 118; see the module docstring).

    Pixels with no return (16-bit 0, float NaN) become `missing` (None: max_depth, i.e. "far"); +inf
    becomes max_depth and -inf 0.
    """
    pixels = image_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        metres = pixels.astype(np.float32) / 1000.0  # millimetres -> metres
        metres[pixels == 0] = np.nan
    elif msg.encoding == "32FC1":
        metres = pixels.astype(np.float32)
    else:
        raise ConversionError(f"depth needs a 16UC1 (millimetres) or 32FC1 (metres) image, got {msg.encoding}")
    fill = float(max_depth if missing is None else missing)
    metres = np.nan_to_num(metres, nan=fill, posinf=float(max_depth), neginf=0.0)
    np.clip(metres, 0.0, float(max_depth), out=metres)
    return resize_nearest(metres, size)


# -- joints, text, arrays ------------------------------------------------------------------------
def joint_state(msg: JointState, joints: Sequence[str] | None = None,
                fields: Sequence[str] = ("position", "velocity")) -> np.ndarray:
    """JointState -> float32 (len(fields) x n_joints,): each field for the named joints, in order.

    `joints` None: every joint in the message's order. Missing joints, fields shorter than the name
    list, or non-finite values are errors.
    """
    names = list(msg.name)
    order = list(range(len(names))) if joints is None else []
    for joint in joints or ():
        if joint not in names:
            raise ConversionError(f"joint {joint!r} is not in the JointState (it has {names}); expected {list(joints)}")
        order.append(names.index(joint))
    if not order:
        raise ConversionError("JointState names no joints; expected at least one")
    parts = []
    for name in fields:
        if name not in ("position", "velocity", "effort"):
            raise ConversionError(f"JointState field {name!r}; expected position, velocity or effort")
        values = np.asarray(getattr(msg, name), np.float64)
        if values.size != len(names):
            raise ConversionError(f"JointState {name} has {values.size} values for {len(names)} joint names")
        parts.append(values[order])
    out = np.concatenate(parts).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise ConversionError(f"JointState has NaN or infinite {list(fields)} values")
    return out


def string(msg: String, max_chars: int = 512) -> str:
    text = str(msg.data)
    if len(text) > max_chars:
        raise ConversionError(f"text of {len(text)} characters; at most {max_chars} expected")
    return text


def float64_array(msg: Float64MultiArray, size: int | None = None) -> np.ndarray:
    """Float64MultiArray -> float32 (n,), `size` values when given, all finite."""
    values = np.asarray(msg.data, np.float64)
    if size is not None and values.size != int(size):
        raise ConversionError(f"{values.size} values; expected {int(size)}")
    if not np.all(np.isfinite(values)):
        raise ConversionError("NaN or infinite values; expected finite numbers")
    return values.astype(np.float32)


# -- commands ------------------------------------------------------------------------------------
def to_float64_array(values: np.ndarray, label: str = "joints") -> Float64MultiArray:
    values = np.asarray(values, np.float64).reshape(-1)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=values.size, stride=values.size)]
    msg.data = values.tolist()
    return msg


def duration(seconds: float) -> Duration:
    whole = int(np.floor(seconds))
    return Duration(sec=whole, nanosec=round((seconds - whole) * 1e9) % 1_000_000_000)


def to_joint_trajectory(chunk: np.ndarray, joint_names: Sequence[str], times_s: Sequence[float],
                        field: str = "velocities", stamp: Any = None) -> JointTrajectory:
    """Actions (H, n_joints) at `times_s` (seconds from the header stamp) -> JointTrajectory."""
    chunk = np.asarray(chunk, np.float64).reshape(len(times_s), -1)  # (H, n)
    if chunk.shape[1] != len(joint_names):
        raise ConversionError(f"{chunk.shape[1]} values per point for {len(joint_names)} joints {list(joint_names)}")
    if field not in ("positions", "velocities"):
        raise ConversionError(f"trajectory field {field!r}; expected positions or velocities")
    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    msg.points = [JointTrajectoryPoint(time_from_start=duration(float(t)), **{field: values.tolist()})
                  for values, t in zip(chunk, times_s)]
    return msg


def trajectory_points(msg: JointTrajectory, joint_names: Sequence[str],
                      field: str = "velocities") -> tuple[np.ndarray, np.ndarray]:
    """JointTrajectory -> (times (H,) seconds from start, values (H, n_joints)) in `joint_names` order."""
    names = list(msg.joint_names)
    missing = [j for j in joint_names if j not in names]
    if missing or not msg.points:
        raise ConversionError(f"trajectory for joints {names} with {len(msg.points)} points; expected joints "
                              f"{list(joint_names)} and at least one point")
    order = [names.index(j) for j in joint_names]
    times, rows = [], []
    for i, p in enumerate(msg.points):
        values = np.asarray(getattr(p, field), np.float64)
        if values.size != len(names) or not np.all(np.isfinite(values)):
            raise ConversionError(f"trajectory point {i}: {values.size} {field}, NaN or inf among them; "
                                  f"expected {len(names)} finite values, one per joint")
        rows.append(values[order])
        times.append(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9)
    times = np.asarray(times)
    if np.any(np.diff(times) < 0):
        raise ConversionError(f"trajectory times {times.tolist()} are not increasing")
    return times, np.stack(rows)


# -- the registry --------------------------------------------------------------------------------
# name -> (message type name, function(msg, **args))
CONVERTERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "rgb": ("sensor_msgs/msg/Image", rgb),
    "depth": ("sensor_msgs/msg/Image", depth),
    "joint_state": ("sensor_msgs/msg/JointState", joint_state),
    "string": ("std_msgs/msg/String", string),
    "float64_array": ("std_msgs/msg/Float64MultiArray", float64_array),
}


def message_type(name: str) -> type:
    """"sensor_msgs/msg/Image" or "sensor_msgs/Image" -> the message class."""
    parts = name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type {name!r}; expected 'package/Type' or 'package/msg/Type'")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {name!r} is not installed ({exc}); is its package in the environment?") from exc


def load_callable(path: str) -> Callable[..., Any]:
    """"pkg.module:function" or "pkg.module.function" -> the function."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise ValueError(f"converter {path!r}; expected a built-in name {sorted(CONVERTERS)} or a dotted path "
                         "'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load converter {path!r}: {exc}") from exc
    if not callable(fn):
        raise TypeError(f"converter {path!r} is not callable")
    return fn


def make_converter(converter: str, msg_type: str | None = None,
                   args: Mapping[str, Any] | None = None) -> tuple[type, Callable[[Any], Any]]:
    """A topic's (message class, msg -> value) from its config: a built-in name or a dotted path."""
    args = dict(args or {})
    if converter in CONVERTERS:
        default_type, fn = CONVERTERS[converter]
        msg_type = msg_type or default_type
    else:
        if not msg_type:
            raise ValueError(f"converter {converter!r} is user-written: the topic needs `type:` "
                             "(e.g. sensor_msgs/msg/JointState)")
        fn = load_callable(converter)
    return message_type(msg_type), partial(fn, **args)

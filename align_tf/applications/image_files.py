"""Finding images on disk: files, folders (recursively) and glob patterns; class folders."""

from __future__ import annotations

import glob
import json
import os

from align_tf.errors import NoImagesError, NotFoundError  # noqa: F401  (public here too)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def images_in_folder(folder: str) -> list[str]:
    """Every image file under `folder`, recursively, in sorted (deterministic) order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if is_image_file(f))
    return found


def find_images(sources) -> list[str]:
    """Each source is an image file, a folder (searched recursively) or a glob pattern
    (`**` allowed). Returns the image paths in the order given, folders and globs sorted."""
    if isinstance(sources, str):
        sources = [sources]
    paths = []
    for source in sources:
        if os.path.isdir(source):
            found = images_in_folder(source)
        elif os.path.isfile(source):
            found = [source]
        else:
            found = sorted(p for p in glob.glob(source, recursive=True)
                           if os.path.isfile(p) and is_image_file(p))
        if not found:
            raise NoImagesError(f"{source}: no image files there (looked for "
                                f"{', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(found)
    return paths


def read_class_folders(folder: str, class_names=None):
    """An image-classification folder: one subfolder per class. Class names are the folder
    names with '_' read as a space, unless `class_names` maps folder name -> class name (a dict
    or a JSON file path). Returns (image_paths, labels, class_names)."""
    if isinstance(class_names, str):
        with open(class_names, encoding="utf-8") as f:
            class_names = json.load(f)
    if not os.path.isdir(folder):
        raise NoImagesError(f"{folder}: not a folder (expected one subfolder per class)")
    subfolders = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not subfolders:
        raise NoImagesError(f"{folder}: no class subfolders")
    if class_names is not None:
        missing = [d for d in subfolders if d not in class_names]
        if missing:
            raise NotFoundError(f"class-name map: no entry for folders {missing[:5]}")
    paths, labels, names = [], [], []
    for label, sub in enumerate(subfolders):
        names.append(class_names[sub] if class_names is not None else sub.replace("_", " "))
        found = images_in_folder(os.path.join(folder, sub))
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise NoImagesError(f"{folder}: the class subfolders hold no images")
    return paths, labels, names

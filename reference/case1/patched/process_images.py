#!/usr/bin/env python3
# Patched variant of Case 1: the as-given design (ThreadPool, the same stages, send_stats in the
# main thread once per image) with only the correctness fixes it needs to run end to end, so the
# review's questions about that design can be measured on it. Every patch names its finding
# (review/findings/case1.yaml); every other defect is kept on purpose.
import json
import os
from argparse import ArgumentParser
from datetime import timedelta
from io import BytesIO
from multiprocessing import cpu_count
from multiprocessing.pool import ThreadPool
from typing import Tuple

import numpy as np
import requests
from PIL import Image
from tqdm import tqdm


def main():
    parser = ArgumentParser(
        description="Tool to send images for classification with some preprocessing "
        "(rotate 90 and resize twice)"
    )
    parser.add_argument("--input-dir", type=str, required=True)  # PATCH C1-01
    parser.add_argument("url", type=str, help="classification api url")
    parser.add_argument("--skip-rotation", action="store_true")
    parser.add_argument("--skip-resize", action="store_true")
    parser.add_argument(
        "--threads-num",
        type=int,
        default=cpu_count(),
        help="number of threads to use to send images",
    )
    args = parser.parse_args()

    images = []
    for name in os.listdir(args.input_dir):
        image_path = args.input_dir + "/" + name
        if image_path[-4:] != ".jpg" and image_path[-4:] != ".png":  # PATCH C1-05
            print(f"{image_path} is not an image")
            continue
        images.append(image_path)

    pool = ThreadPool(args.threads_num)
    results = {}
    elapsed_stats = []
    image_size_stats = []
    class_count = {}
    for res in pool.imap_unordered(lambda x: process_image(x, results, args), tqdm(images)):
        elapsed, cls, score, image_size = res  # PATCH C1-10
        if elapsed is None:
            continue
        send_stats(args.url, elapsed, cls, image_size)  # PATCH C1-11: the stub gets the API url
        if cls not in class_count:
            class_count[cls] = 0
        class_count[cls] = class_count[cls] + 1
        elapsed_stats.append(elapsed)
        image_size_stats.append(image_size)

    f = open("output.json", "w")
    json.dump(results, f, indent=2)

    print("Classification results:")
    for k in class_count:
        print(k, "--", class_count[k])

    if not elapsed_stats:  # PATCH C1-13
        return
    elapsed_stats = sorted(elapsed_stats)
    image_size_stats = sorted(image_size_stats)
    print(
        "Request time min/avg/max: {}/{}/{}".format(
            # PATCH C1-14: sum() of timedeltas needs a timedelta start value
            elapsed_stats[0], sum(elapsed_stats, timedelta()) / len(elapsed_stats), elapsed_stats[-1]
        )
    )
    print(
        "Image size min/avg/max: {}/{}/{}".format(
            image_size_stats[0], sum(image_size_stats) / len(image_size_stats), image_size_stats[-1]
        )
    )


def process_image(imp, res, args) -> Tuple[timedelta, str, float, int]:
    try:
        im = Image.open(imp)
        if im.mode not in ("L", "RGB"):  # PATCH C1-22: JPEG cannot hold RGBA or palette images
            im = im.convert("RGB")
        if args.skip_rotation:
            width, height = im.size
            im = im.resize((width // 2, height // 2))  # PATCH C1-16
        elif args.skip_resize:
            im = im.transpose(Image.ROTATE_90)
        else:
            width, height = im.size
            im = im.transpose(Image.ROTATE_90)
            im = im.resize((width // 2, height // 2))  # PATCH C1-16

        # PATCH C1-20: one number per image, the mean over channels (the loop still runs per channel,
        # so it costs what the original's does)
        magic_number = float(np.mean(calc_magic_number(np.array(im))))

        temp = BytesIO()
        im.save(temp, format="JPEG")  # PATCH C1-21
        image_jpeg_code = temp.getvalue()

        r = requests.post(
            args.url + "/api/classify",
            headers={"Content-Type": "image/jpeg"},
            params={"magic": magic_number},
            data=image_jpeg_code,
        )
        res[imp] = {
            "elapsed": r.elapsed.total_seconds(),
            "class": r.json().get("class"),
            "score": r.json().get("score"),
        }
        return r.elapsed, r.json().get("class"), r.json().get("score"), len(image_jpeg_code)
    except:
        print("Connection to classification API failed")
        return None, None, None, None  # PATCH C1-10


def calc_magic_number(image):
    result = 0
    for x in range(image.shape[0]):
        for y in range(image.shape[1]):
            # PATCH C1-29: each pixel (a uint8 scalar, or a uint8 array of channels) widened to int64
            # before the arithmetic, so nothing wraps or raises on any NumPy; still NumPy work per
            # pixel, as in the original (tests/case1/test_c1_patched_fidelity.py measures the cost)
            result += (x + 1) * (y + 1) * image[x, y].astype(np.int64)
    return result / (image.shape[0] * image.shape[1])


def send_stats(url, elapsed, cls, image_size):  # PATCH C1-11: the body the original omits
    # The original omits the body and states its premise: it always succeeds, never raises, and
    # sends an HTTP request with requests. C1-11 notes the stub cannot even know where to send it;
    # this one takes the API url and really POSTs to its stats endpoint, so its latency is real,
    # and keeps the premise: a failed stats call is dropped, it never reaches main(). The call stays
    # serial in the main thread: that is C1-11's defect, measured on this variant.
    try:
        requests.post(
            url + "/api/stats",
            json={"elapsed": elapsed.total_seconds(), "class": cls, "image_size": image_size},
            timeout=30,
        )
    except requests.RequestException:
        pass


if __name__ == "__main__":
    main()

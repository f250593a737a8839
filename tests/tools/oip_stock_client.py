"""Call an inference endpoint with the stock ``tritonclient.grpc`` client and print what it saw as JSON.

Runs in its own process: tritonclient's protos and ours share the ``inference`` package, and both
in one process collide in the protobuf descriptor pool.

    python tests/tools/oip_stock_client.py HOST:PORT MODEL IMAGE [IMAGE ...]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import tritonclient.grpc as triton


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("model")
    parser.add_argument("images", nargs="+", type=pathlib.Path)
    args = parser.parse_args(argv)

    client = triton.InferenceServerClient(url=args.endpoint)
    metadata = client.get_model_metadata(args.model, as_json=True)
    images = np.array([path.read_bytes() for path in args.images], dtype=np.object_)
    image_input = triton.InferInput("image", [len(images)], "BYTES")
    image_input.set_data_from_numpy(images)
    outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("scores")]
    result = client.infer(args.model, inputs=[image_input], outputs=outputs)
    response = result.get_response(as_json=True)
    report = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(args.model),
        "metadata": metadata,
        "labels": [label.decode() for label in result.as_numpy("label").tolist()],
        "scores_shape": list(result.as_numpy("scores").shape),
        "scores_dtype": str(result.as_numpy("scores").dtype),
        "parameters": response.get("parameters", {}),
    }
    client.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

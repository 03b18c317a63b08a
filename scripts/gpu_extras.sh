#!/usr/bin/env bash
# The packages a scale-out run needs on the GPU machine beyond ../shared/gpu/make_chunks.sh's two
# archives: `vllm serve`'s web stack (agent=vllm_server), DeepSpeed (configs/accelerate/
# zero3.yaml) and pytest-xdist (pyproject's pytest options name it, `pytest -m gpu` too). Run
# from the repository root on the CPU machine, the project's virtual environment active
# (DeepSpeed's build imports torch), in about a minute:
#     bash scripts/gpu_extras.sh
# It fills .gpu/c3/ (~13 MiB, git-ignored with .gpu/) with py3.12 wheels and install.sh. On the
# GPU machine, after chunks 1 and 2, carry .gpu/c3 too and run
#     source .gpu/c2/setup.sh && bash .gpu/c3/install.sh && ...
# install.sh puts into /tmp/site only the wheels whose module the image lacks.
set -euo pipefail
out=.gpu/c3
rm -rf "$out" && mkdir -p "$out"
flags=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any
       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
       --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)
python3 -m pip download -q "${flags[@]}" -d "$out" \
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 attrs==26.1.0 dnspython==2.9.2 \
  email_validator==2.4.0 frozenlist==1.8.0 h11==0.16.0 httptools==0.9.0 jmespath==1.1.0 \
  model_hosting_container_standards==0.1.16 multidict==7.2.1 prometheus_client==0.26.0 \
  prometheus_fastapi_instrumentator==8.1.0 propcache==0.5.4 pydantic_extra_types==2.11.1 \
  python_multipart==0.0.34 supervisor==4.3.0 uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0 \
  websockets==17.4 yarl==1.25.1 \
  einops==0.8.2 hjson==3.1.0 msgpack==1.2.4 ninja==1.13.2 psutil==7.2.2 py_cpuinfo==9.0.0 \
  pytest_xdist==3.8.0 execnet==2.1.2
# DeepSpeed is published as source only; without its compiled ops it is pure Python.
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$out" deepspeed==0.19.8
cat > "$out/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Installs into /tmp/site the wheels of .gpu/c3 whose module the GPU image lacks.
python3 - <<'PY'
import glob, importlib.util, subprocess
modules = {"uvicorn": "uvicorn", "h11": "h11", "httptools": "httptools", "uvloop": "uvloop",
           "websockets": "websockets", "watchfiles": "watchfiles",
           "python_multipart": "python_multipart", "prometheus_client": "prometheus_client",
           "prometheus_fastapi_instrumentator": "prometheus_fastapi_instrumentator",
           "aiohttp": "aiohttp", "aiohappyeyeballs": "aiohappyeyeballs", "aiosignal": "aiosignal",
           "frozenlist": "frozenlist", "multidict": "multidict", "propcache": "propcache",
           "yarl": "yarl", "attrs": "attrs", "email_validator": "email_validator",
           "dnspython": "dns", "model_hosting_container_standards": "model_hosting_container_standards",
           "jmespath": "jmespath", "pydantic_extra_types": "pydantic_extra_types",
           "supervisor": "supervisor", "deepspeed": "deepspeed", "einops": "einops",
           "hjson": "hjson", "msgpack": "msgpack", "ninja": "ninja", "psutil": "psutil",
           "py_cpuinfo": "cpuinfo", "pytest_xdist": "xdist", "execnet": "execnet"}
missing = [wheel for name, module in modules.items() if importlib.util.find_spec(module) is None
           for wheel in glob.glob(f".gpu/c3/{name}-*.whl")]
print("gpu extras: installing", [w.split("/")[-1].split("-")[0] for w in missing])
if missing:
    subprocess.run(["python3", "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--target", "/tmp/site", *missing], check=True)
PY
INSTALL
du -sh "$out"

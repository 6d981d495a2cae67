"""A CRI client corral did not write: Python grpcio (grpc-core) with default channel options.

grpc-core sends the unix socket's path as the HTTP/2 :authority. Run by tests/tests/grpcio.rs:

    python cri_client.py SOCKET PROTO_DIR CGROUP_PARENT [IMAGE]

Generates the runtime.v1 stubs from PROTO_DIR/api.proto with grpcio-tools into a temp dir, then
runs Version, RunPodSandbox, PodSandboxStatus, ListPodSandbox, a server-streaming call
(StreamPodSandboxes), with IMAGE (pulled already) CreateContainer, StartContainer and
ListContainers (corrald sends list items it encoded ahead of time: this decoder is not ours),
StopPodSandbox and RemovePodSandbox, with a GetContainerEvents subscription (a long-lived
server stream) open throughout that must deliver the pod's CREATED, STARTED, STOPPED and
DELETED events. Prints one line per step; exits non-zero on any failure.
"""

import importlib
import sys
import tempfile

import grpc
from grpc_tools import protoc


def stubs(proto_dir, out_dir):
    code = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"{proto_dir}/api.proto",
        ]
    )
    if code != 0:
        sys.exit(f"grpc_tools.protoc failed with {code}")
    sys.path.insert(0, out_dir)
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


def main():
    socket, proto_dir, cgroup_parent = sys.argv[1:4]
    image = sys.argv[4] if len(sys.argv) > 4 else None
    print(f"grpcio {grpc.__version__}")
    with tempfile.TemporaryDirectory() as out_dir:
        pb, rpc = stubs(proto_dir, out_dir)
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            runtime = rpc.RuntimeServiceStub(channel)
            version = runtime.Version(pb.VersionRequest(version="0.1.0"), timeout=30)
            assert version.runtime_name == "corral", version
            print(f"Version: {version.runtime_name} {version.runtime_api_version}")

            events = runtime.GetContainerEvents(pb.GetEventsRequest(), timeout=300)
            # The response headers come once corrald has registered the subscriber.
            events.initial_metadata()
            seen = []

            def wait_event(pod, wanted):
                for event in events:
                    if event.container_id == pod:
                        seen.append(pb.ContainerEventType.Name(event.container_event_type))
                        if seen[-1] == wanted:
                            return
                sys.exit(f"GetContainerEvents ended before {wanted}; saw {seen}")

            config = pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(
                    name="grpcio", uid="uid-grpcio", namespace="e2e", attempt=0
                ),
                hostname="grpcio",
                labels={"e2e": "grpcio"},
                linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent),
            )
            pod = runtime.RunPodSandbox(
                pb.RunPodSandboxRequest(config=config), timeout=120
            ).pod_sandbox_id
            print(f"RunPodSandbox: {pod}")
            wait_event(pod, "CONTAINER_STARTED_EVENT")

            status = runtime.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=30
            ).status
            assert status.state == pb.SANDBOX_READY, status
            assert status.metadata.name == "grpcio", status
            print(f"PodSandboxStatus: {pb.PodSandboxState.Name(status.state)}")

            listed = runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
            mine = [p for p in listed if p.id == pod]
            assert len(mine) == 1, listed
            assert mine[0].state == pb.SANDBOX_READY, mine[0]
            assert mine[0].metadata.name == "grpcio", mine[0]
            assert mine[0].labels["e2e"] == "grpcio", mine[0]
            print(f"ListPodSandbox: {pb.PodSandboxState.Name(mine[0].state)}")

            if image:
                container = runtime.CreateContainer(
                    pb.CreateContainerRequest(
                        pod_sandbox_id=pod,
                        config=pb.ContainerConfig(
                            metadata=pb.ContainerMetadata(name="sleeper"),
                            image=pb.ImageSpec(image=image),
                            command=["sleep", "1000"],
                            labels={"e2e": "grpcio"},
                        ),
                        sandbox_config=config,
                    ),
                    timeout=120,
                ).container_id
                runtime.StartContainer(
                    pb.StartContainerRequest(container_id=container), timeout=60
                )
                containers = runtime.ListContainers(
                    pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=pod)),
                    timeout=30,
                ).containers
                assert [c.id for c in containers] == [container], containers
                listed_container = containers[0]
                assert listed_container.state == pb.CONTAINER_RUNNING, listed_container
                assert listed_container.metadata.name == "sleeper", listed_container
                assert listed_container.pod_sandbox_id == pod, listed_container
                assert listed_container.labels["e2e"] == "grpcio", listed_container
                print(f"ListContainers: {pb.ContainerState.Name(listed_container.state)}")

            streamed = [
                sandbox.id
                for response in runtime.StreamPodSandboxes(
                    pb.StreamPodSandboxesRequest(), timeout=30
                )
                for sandbox in response.pod_sandboxes
            ]
            assert pod in streamed, streamed
            print(f"StreamPodSandboxes: {len(streamed)} pod(s)")

            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            print("StopPodSandbox: ok")
            wait_event(pod, "CONTAINER_STOPPED_EVENT")
            runtime.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60
            )
            print("RemovePodSandbox: ok")
            wait_event(pod, "CONTAINER_DELETED_EVENT")
            events.cancel()
            print("GetContainerEvents: " + " ".join(e.split("_")[1] for e in seen))
            listed = runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
            assert pod not in [p.id for p in listed], listed
    print("grpcio client: all calls succeeded")


if __name__ == "__main__":
    main()

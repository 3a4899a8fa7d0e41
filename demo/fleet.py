"""The demo's serving fleet at the local servers: an ALB per region in moto, a partner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from tests.support.kubeserver import KubeServer, write_kubeconfig


def make_alb(endpoint: str, region: str, models: list[str]) -> str:
    """A VPC, two subnets and an ALB tagged with the models it serves; its listener ARN."""
    ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint)
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate(zones)
    ]
    elb = boto3.client("elbv2", region_name=region, endpoint_url=endpoint)
    lb = elb.create_load_balancer(
        Name="model-serving",
        Subnets=subnets,
        Tags=[{"Key": "killswitch:model", "Value": " ".join(models)}],
    )["LoadBalancers"][0]
    group = elb.create_target_group(Name="servers", Protocol="HTTP", Port=80, VpcId=vpc)
    return str(
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[
                {"Type": "forward", "TargetGroupArn": group["TargetGroups"][0]["TargetGroupArn"]}
            ],
        )["Listeners"][0]["ListenerArn"]
    )


def killswitch_rules(endpoint: str, region: str, listener: str) -> list[dict[str, Any]]:
    """The listener's rules that answer with a fixed response (killswitch's)."""
    elb = boto3.client("elbv2", region_name=region, endpoint_url=endpoint)
    return [
        rule
        for rule in elb.describe_rules(ListenerArn=listener)["Rules"]
        if any(a["Type"] == "fixed-response" for a in rule["Actions"])
    ]


def make_cluster(work: Path, models: list[str]) -> tuple[KubeServer, Path]:
    """A Kubernetes API test server with a `serving` namespace and a Deployment per model
    (label killswitch.io/model=<model>); its kubeconfig, context `eu-prod`."""
    from kubernetes import client

    kube = KubeServer().start()
    api = kube.client()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "serving"}})
    for replicas, model in enumerate(models, start=3):
        labels = {"app": f"{model}-api", "killswitch.io/model": model}
        client.AppsV1Api(api).create_namespaced_deployment(
            "serving",
            {
                "metadata": {"name": f"{model}-api", "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "server", "image": f"{model}:1"}]},
                    },
                },
            },
        )
    return kube, write_kubeconfig(work / "kubeconfig", {"eu-prod": kube})


def replicas(kube: KubeServer, name: str) -> int:
    deployment = kube.get("deployments", "serving", name)
    return int((deployment or {}).get("spec", {}).get("replicas") or 0)


def fleet_entries(endpoint: str, regions: list[str], kubeconfig: Path) -> str:
    """The inventory entries of the self-hosted fleet: ALBs in ``regions``, and the
    cluster `eu-prod` (make_cluster) serving both models in Europe."""
    return f"""\
  aws-fleet:                     # self-hosted servers behind ALBs tagged killswitch:model
    type: aws
    regions: [{", ".join(regions)}]
    mechanisms: [elb-rule]
    endpoint_url: {endpoint}
  k8s-eu:                        # our own serving cluster in Europe
    type: kubernetes
    context: eu-prod
    kubeconfig: {kubeconfig}
    region: eu-west-1
    namespaces: [serving]
    mechanisms: [configmap-flag, scale, network-policy]
"""


MODELS_YAML = """\
models:
  mythos-5:
    aws:
      bedrock_ids: [anthropic.mythos-5-v1:0]
      route: {path: "/v1/models/mythos-5/*"}
  fable-5:
    aws:
      bedrock_ids: [anthropic.fable-5-v1:0]
      route: {path: "/v1/models/fable-5/*"}
"""
"""Both models, with their Bedrock ids and the route their load balancers serve."""

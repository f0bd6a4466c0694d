#!/usr/bin/env bash
# The two instance profiles cluster.yaml names (docs/cluster.md, section 3). Run once per AWS account with
# an administrator's credentials:  bash deploy/aws-iam.sh
#   growthpace-node: every GPU node. Pulls the project's image from ECR (AmazonEC2ContainerRegistryReadOnly)
#                    and reads/writes a study kept in S3.
#   growthpace-head: the head. The same, plus EC2 to add and remove GPU nodes and iam:PassRole to hand them
#                    growthpace-node (without a named profile Ray's launcher would make ray-autoscaler-v1,
#                    EC2 + S3 only: no node could pull the image).
set -euo pipefail
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
TRUST='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'

for name in growthpace-node growthpace-head; do
  aws iam create-role --role-name "$name" --assume-role-policy-document "$TRUST" >/dev/null
  aws iam attach-role-policy --role-name "$name" --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly
  aws iam attach-role-policy --role-name "$name" --policy-arn arn:aws:iam::aws:policy/AmazonS3FullAccess
  aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
done
aws iam attach-role-policy --role-name growthpace-head --policy-arn arn:aws:iam::aws:policy/AmazonEC2FullAccess
aws iam put-role-policy --role-name growthpace-head --policy-name pass-node-role --policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iam:PassRole\",\"Resource\":\"arn:aws:iam::${ACCOUNT}:role/growthpace-node\"}]}"
echo "instance profiles growthpace-head and growthpace-node in account ${ACCOUNT}: put ${ACCOUNT} for REPLACE_ACCOUNT_ID in cluster.yaml"

#!/usr/bin/env sh
# Kafka ACLs that confine what each riverrun process may do, for a cluster with an authorizer
# (authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer in KRaft) and
# SASL users per process. The registry (`models`, `models.artifacts`) is written only by
# operators and the two processes that publish: the learner (snapshots, drift) and the judge
# (policies). Every record there is also signed with RIVERRUN_REGISTRY__SIGNING_KEY, and workers
# ignore what the key did not sign; the ACLs keep others from filling the topic at all.
#
#   BOOTSTRAP=kafka:9092 ADMIN_CONFIG=admin.properties sh deploy/kafka/acls.sh
#
# Topic names are the defaults; change them here if RIVERRUN_TOPICS__* are set.
set -eu
: "${BOOTSTRAP:?set BOOTSTRAP to host:port of a broker}"
ACLS="kafka-acls.sh --bootstrap-server $BOOTSTRAP ${ADMIN_CONFIG:+--command-config $ADMIN_CONFIG}"

allow() {  # principal operation resource-flag name [pattern-type]
    $ACLS --add --allow-principal "User:$1" --operation "$2" "$3" "$4" \
        ${5:+--resource-pattern-type "$5"}
}

# Scorers: read requests and the registry; write predictions and dead letters; one group;
# transactional ids (exactly-once) start with the group id.
for t in requests models models.artifacts; do allow riverrun-scorer Read --topic "$t"; done
for t in predictions predictions.shadow requests.dlq; do allow riverrun-scorer Write --topic "$t"; done
allow riverrun-scorer Read --group riverrun-scorers prefixed
allow riverrun-scorer Write --transactional-id riverrun-scorers prefixed
allow riverrun-scorer DescribeConfigs --topic predictions  # the size limit of outputs

# Learners: read feedback, predictions, the examples log and the registry; write examples,
# outcomes, dead letters, snapshots and drift records; their own groups and transactional ids.
for t in feedback predictions examples models models.artifacts; do
    allow riverrun-learner Read --topic "$t"
done
for t in examples outcomes requests.dlq models models.artifacts; do
    allow riverrun-learner Write --topic "$t"
done
allow riverrun-learner Read --group riverrun-learner- prefixed
allow riverrun-learner Write --transactional-id riverrun-learner- prefixed

# The judge: read outcomes, shadow predictions, dead letters and the registry; write policies;
# its faust app's own internal topics and group.
for t in outcomes predictions.shadow requests.dlq models; do allow riverrun-judge Read --topic "$t"; done
allow riverrun-judge Write --topic models
allow riverrun-judge All --topic riverrun-judge prefixed
allow riverrun-judge Read --group riverrun-judge prefixed

# Operators (`riverrun models release|deploy|retire`, `riverrun dlq resend`).
for t in models models.artifacts examples requests feedback requests.dlq.resent; do
    allow riverrun-operator Write --topic "$t"
done
for t in models models.artifacts examples requests.dlq requests.dlq.resent; do
    allow riverrun-operator Read --topic "$t"
done
allow riverrun-operator Write --transactional-id riverrun-release- prefixed
allow riverrun-operator Write --transactional-id riverrun-dlq-resend- prefixed

# Upstream and downstream services: requests and feedback in, predictions out.
for t in requests feedback; do allow riverrun-client Write --topic "$t"; done
for t in predictions requests.dlq; do allow riverrun-client Read --topic "$t"; done

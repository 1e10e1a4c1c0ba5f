"""RabbitMQ plumbing: dramatiq for the saga's commands and replies, kombu for the public exchanges."""

"""The gRPC front door: ``waitroom.v1.WaitroomService`` over Redis (``waitroom api``)."""

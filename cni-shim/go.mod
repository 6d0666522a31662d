module github.com/axon-cni/axon/cni-shim

go 1.26.8

require (
	github.com/axon-cni/axon/gen v0.0.0
	github.com/containernetworking/cni v1.3.1
	golang.org/x/sys v0.48.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/vishvananda/netns v0.0.4 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace github.com/axon-cni/axon/gen => ../gen

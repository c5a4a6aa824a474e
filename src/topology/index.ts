export { FileTopology } from './file-topology.ts'
export {
  type ClusterRecord,
  type GatewayRecord,
  type InstanceHealth,
  type InstanceRecord,
  type InstanceRole,
  primaryOf,
  readableReplicas,
  type Topology,
  type TopologySnapshot,
} from './topology.ts'

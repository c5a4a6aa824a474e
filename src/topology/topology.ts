/**
 * The cluster's layout and each component's record: what every component reads to find
 * the others, instead of hard-coded ports. Records are small documents under stable keys
 * (the cluster, one per instance, one per gateway), each written only by the component
 * it describes, so that a key-value store with watches (etcd) can hold them unchanged.
 *
 * @module
 */

/** What an instance is to the cluster. */
export type InstanceRole = 'primary' | 'replica'

/** What its pooler last saw of its Postgres. */
export type InstanceHealth = 'starting' | 'healthy' | 'restarting' | 'failed' | 'stopped'

/** The cluster as created: fixed until someone changes its shape. */
export interface ClusterRecord {
  name: string
  /** The role applications log in as, and the database they get. */
  user: string
  database: string
  /** Where the gateway listens for read-write sessions and for read-only ones. */
  gateway: { host: string; port: number; replicaPort: number }
  /** Instance names, the primary first at creation. */
  instances: string[]
  createdAt: string
}

/** One Postgres instance and its pooler, written by that pooler. */
export interface InstanceRecord {
  name: string
  role: InstanceRole
  health: InstanceHealth
  /** TCP address (replication and remote clients, scram-sha-256). */
  host: string
  port: number
  /** The private Unix socket directory the pooler and gateway use. */
  socketDir: string
  dataDir: string
  /** The pooler process, and the postmaster it runs. */
  poolerPid: number | null
  postgresPid: number | null
  /** Where the pooler serves its lease link to gateways: a Unix socket path or host:port. */
  poolerLink: string | null
  /** The pooler's backend connections, how many are leased now, and sessions waiting for one. */
  pool: { backends: number; leased: number; waiting: number }
  /** Restarts after the postmaster died, since the pooler started. */
  restarts: number
  /** Last WAL position seen: written (primary) or replayed (replica). */
  walLsn: string | null
  /** For a replica: bytes of WAL behind the primary, when last measured. */
  lagBytes: number | null
  /** Why it is not healthy, when it is not. */
  problem: string | null
  updatedAt: string
}

/** A gateway process, written by it. */
export interface GatewayRecord {
  name: string
  pid: number
  host: string
  port: number
  replicaPort: number
  sessions: number
  updatedAt: string
}

/** Everything the topology holds at one moment. */
export interface TopologySnapshot {
  cluster: ClusterRecord | null
  instances: InstanceRecord[]
  gateways: GatewayRecord[]
}

/**
 * The store behind the records. `FileTopology` keeps them in a directory for a cluster on
 * one machine; an etcd store implements the same interface.
 */
export interface Topology {
  snapshot(): Promise<TopologySnapshot>
  putCluster(record: ClusterRecord): Promise<void>
  putInstance(record: InstanceRecord): Promise<void>
  putGateway(record: GatewayRecord): Promise<void>
  removeGateway(name: string): Promise<void>
  /** Calls `listener` with a new snapshot whenever a record changes; returns the unsubscriber. */
  watch(listener: (snapshot: TopologySnapshot) => void): () => void
}

/** The instance that takes writes now, if any is healthy. */
export function primaryOf(snapshot: TopologySnapshot): InstanceRecord | null {
  return snapshot.instances.find((instance) => instance.role === 'primary') ?? null
}

/** Healthy replicas, least lagging first; those more than `maxLagBytes` behind are left out. */
export function readableReplicas(snapshot: TopologySnapshot, maxLagBytes: number): InstanceRecord[] {
  return snapshot.instances
    .filter(
      (instance) =>
        instance.role === 'replica' &&
        instance.health === 'healthy' &&
        (instance.lagBytes === null || instance.lagBytes <= maxLagBytes),
    )
    .sort((a, b) => (a.lagBytes ?? 0) - (b.lagBytes ?? 0))
}

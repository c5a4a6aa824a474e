export * from './batch.ts'
export * from './fixed-queue.ts'

export * from './fixed-queue.ts'

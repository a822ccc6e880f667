// The epoll(7) event loop: level-triggered dispatch of descriptor handlers on one thread, with a
// wake-up eventfd for Stop() and RunSync(), and a handshake that lets Remove() on another
// thread wait until the removed descriptor's handler has returned.
#include "base/event_loop.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <array>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "base/event_fd.h"
#include "base/fd.h"

namespace tern {
namespace {

// epoll data of the wake-up eventfd; watched descriptors get ids from 1 up.
constexpr uint64_t kWakeId = 0;

class EpollEventLoop : public EventLoop {
 public:
  EpollEventLoop(Fd epoll, EventFd wake) : epoll_(std::move(epoll)), wake_(std::move(wake)) {}

  Status Add(int fd, Handler handler, uint32_t events) override;
  Status Modify(int fd, uint32_t events) override;
  Status Remove(int fd) override;
  void RunSync(const std::function<void()>& task) override;
  void Pause() override;
  void Resume() override;
  void Run() override;
  void Stop() override;

 private:
  // A task queued by RunSync() from another thread.
  struct Task {
    const std::function<void()>* function;
    bool done = false;
  };

  bool OnLoopThreadLocked() const { return running_ && loop_thread_ == std::this_thread::get_id(); }
  void Wake();
  void Dispatch(uint64_t id);
  // Runs queued tasks until none is left, unlocking `lock` (on mutex_) while each runs; returns
  // with it locked. Loop thread only.
  void RunTasks(std::unique_lock<std::mutex>& lock);
  // While paused_: runs tasks as they come and waits for Resume() or Stop(). Loop thread only,
  // with `lock` (on mutex_) held.
  void StayParked(std::unique_lock<std::mutex>& lock);

  const Fd epoll_;
  const EventFd wake_;

  // Held by RunSync() while it runs a task on its caller's thread because the loop is not
  // running, and by Run() while it starts. Recursive: such a task may call RunSync() again.
  std::recursive_mutex idle_mutex_;
  std::mutex mutex_;                 // guards everything below
  std::condition_variable changed_;  // a handler or task finished
  // Watched descriptors: fd -> id, and id -> handler. Handlers are shared so that one removed
  // while running (from itself) stays alive until it returns.
  std::unordered_map<int, uint64_t> ids_;
  std::unordered_map<uint64_t, std::shared_ptr<Handler>> handlers_;
  uint64_t next_id_ = kWakeId + 1;
  uint64_t running_id_ = kWakeId;  // id of the handler running now, kWakeId if none
  std::deque<Task*> tasks_;
  bool running_ = false;  // Run() is dispatching; loop_thread_ is its thread
  bool stop_ = false;
  bool paused_ = false;  // Pause() asked the loop to stop dispatching
  bool parked_ = false;  // the loop thread is waiting in StayParked()
  std::thread::id loop_thread_;
};

Status EpollEventLoop::Add(int fd, Handler handler, uint32_t events) {
  std::lock_guard lock(mutex_);
  if (ids_.contains(fd)) return Error("event loop: descriptor already added", EEXIST);
  uint64_t id = next_id_++;
  epoll_event event = {.events = events, .data = {.u64 = id}};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) < 0) {
    return Error::FromErrno("epoll_ctl(EPOLL_CTL_ADD)");
  }
  ids_.emplace(fd, id);
  handlers_.emplace(id, std::make_shared<Handler>(std::move(handler)));
  return Ok();
}

Status EpollEventLoop::Modify(int fd, uint32_t events) {
  std::lock_guard lock(mutex_);
  auto it = ids_.find(fd);
  if (it == ids_.end()) return Error("event loop: descriptor not added", ENOENT);
  epoll_event event = {.events = events, .data = {.u64 = it->second}};
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event) < 0) {
    return Error::FromErrno("epoll_ctl(EPOLL_CTL_MOD)");
  }
  return Ok();
}

Status EpollEventLoop::Remove(int fd) {
  std::unique_lock lock(mutex_);
  auto it = ids_.find(fd);
  if (it == ids_.end()) return Error("event loop: descriptor not added", ENOENT);
  uint64_t id = it->second;
  ids_.erase(it);
  handlers_.erase(id);
  // Fails only if `fd` was closed already, which removed it from the epoll set anyway.
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  if (!OnLoopThreadLocked()) changed_.wait(lock, [&] { return running_id_ != id; });
  return Ok();
}

void EpollEventLoop::RunSync(const std::function<void()>& task) {
  while (true) {
    std::unique_lock lock(mutex_);
    if (running_ && !OnLoopThreadLocked()) {
      Task queued{&task};
      tasks_.push_back(&queued);
      Wake();
      changed_.notify_all();  // a parked loop waits on changed_, not on epoll
      changed_.wait(lock, [&] { return queued.done; });
      return;
    }
    if (running_) break;  // on the loop thread
    // Not running: run it here, keeping Run() from starting meanwhile.
    lock.unlock();
    std::lock_guard idle(idle_mutex_);
    lock.lock();
    if (running_) continue;  // Run() started before we got idle_mutex_
    lock.unlock();
    task();
    return;
  }
  task();
}

void EpollEventLoop::Run() {
  {
    std::lock_guard idle(idle_mutex_);
    std::lock_guard lock(mutex_);
    running_ = true;
    loop_thread_ = std::this_thread::get_id();
  }
  std::array<epoll_event, 64> events;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (paused_ && !stop_) StayParked(lock);
      if (stop_) break;
    }
    int n = ::epoll_wait(epoll_.get(), events.data(), events.size(), -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      spdlog::error("event loop: {}", Error::FromErrno("epoll_wait").ToString());
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeId) {
        (void)wake_.Read();
        std::unique_lock lock(mutex_);
        RunTasks(lock);
      } else {
        Dispatch(events[i].data.u64);
      }
      std::lock_guard lock(mutex_);
      if (stop_ || paused_) break;  // level-triggered: the rest is reported again
    }
  }
  // Tasks queued before running_ goes false would otherwise never run: their callers wait.
  std::unique_lock lock(mutex_);
  RunTasks(lock);
  running_ = false;
}

void EpollEventLoop::Pause() {
  std::unique_lock lock(mutex_);
  paused_ = true;
  Wake();
  changed_.wait(lock, [&] { return parked_ || !running_ || stop_; });
}

void EpollEventLoop::Resume() {
  {
    std::lock_guard lock(mutex_);
    paused_ = false;
  }
  changed_.notify_all();
}

void EpollEventLoop::StayParked(std::unique_lock<std::mutex>& lock) {
  parked_ = true;
  changed_.notify_all();
  while (paused_ && !stop_) {
    RunTasks(lock);
    changed_.wait(lock, [&] { return !paused_ || stop_ || !tasks_.empty(); });
  }
  parked_ = false;
}

void EpollEventLoop::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    Wake();
  }
  changed_.notify_all();
}

void EpollEventLoop::Wake() {
  if (Status status = wake_.Write(); !status.ok()) {
    spdlog::error("event loop: {}", status.error().ToString());
  }
}

void EpollEventLoop::Dispatch(uint64_t id) {
  std::shared_ptr<Handler> handler;
  {
    std::lock_guard lock(mutex_);
    auto it = handlers_.find(id);
    if (it == handlers_.end()) return;  // removed after epoll_wait() returned
    handler = it->second;
    running_id_ = id;
  }
  (*handler)();
  {
    std::lock_guard lock(mutex_);
    running_id_ = kWakeId;
  }
  changed_.notify_all();
}

void EpollEventLoop::RunTasks(std::unique_lock<std::mutex>& lock) {
  while (!tasks_.empty()) {
    Task* task = tasks_.front();
    tasks_.pop_front();
    lock.unlock();
    (*task->function)();
    lock.lock();
    task->done = true;
    changed_.notify_all();
  }
}

}  // namespace

Result<std::unique_ptr<EventLoop>> EventLoop::Create() {
  int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) return Error::FromErrno("epoll_create1");
  Fd epoll_fd(epoll);
  TERN_ASSIGN_OR_RETURN(EventFd wake, EventFd::Create());
  epoll_event event = {.events = EPOLLIN, .data = {.u64 = kWakeId}};
  if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake.fd(), &event) < 0) {
    return Error::FromErrno("epoll_ctl(EPOLL_CTL_ADD)");
  }
  return std::unique_ptr<EventLoop>(
      std::make_unique<EpollEventLoop>(std::move(epoll_fd), std::move(wake)));
}

}  // namespace tern

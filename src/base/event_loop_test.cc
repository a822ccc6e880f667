// Unit tests for the epoll event loop: dispatch, Modify, Remove's handshake with a running
// handler, RunSync, Pause/Resume and Stop.
#include "base/event_loop.h"

#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "base/event_fd.h"

namespace tern {
namespace {

using namespace std::chrono_literals;

// A loop running on its own thread; stopped and joined on destruction.
class LoopThread {
 public:
  LoopThread() {
    auto loop = EventLoop::Create();
    EXPECT_TRUE(loop.ok());
    loop_ = std::move(loop).value();
    thread_ = std::thread([this] { loop_->Run(); });
  }
  ~LoopThread() {
    loop_->Stop();
    thread_.join();
  }
  EventLoop& loop() { return *loop_; }

 private:
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
};

EventFd MakeEventFd() {
  auto event = EventFd::Create();
  EXPECT_TRUE(event.ok());
  return std::move(event).value();
}

// Polls `condition` for up to 5 s.
template <typename F>
bool WaitFor(F condition) {
  for (int i = 0; i < 5000; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return condition();
}

TEST(EventLoopTest, RunsHandlerWhenReadable) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<uint64_t> total{0};
  ASSERT_TRUE(thread.loop().Add(event.fd(), [&] { total += event.Read().value(); }).ok());
  ASSERT_TRUE(event.Write(3).ok());
  EXPECT_TRUE(WaitFor([&] { return total == 3; }));
  ASSERT_TRUE(event.Write(4).ok());
  EXPECT_TRUE(WaitFor([&] { return total == 7; }));
}

TEST(EventLoopTest, AddTwiceIsEexist) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  ASSERT_TRUE(thread.loop().Add(event.fd(), [] {}).ok());
  Status again = thread.loop().Add(event.fd(), [] {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().errno_value(), EEXIST);
}

TEST(EventLoopTest, AddBadDescriptorFails) {
  LoopThread thread;
  EXPECT_FALSE(thread.loop().Add(-1, [] {}).ok());
  // A failed Add leaves nothing behind to remove.
  EXPECT_EQ(thread.loop().Remove(-1).error().errno_value(), ENOENT);
}

TEST(EventLoopTest, RemoveAndModifyUnknownAreEnoent) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  EXPECT_EQ(thread.loop().Remove(event.fd()).error().errno_value(), ENOENT);
  EXPECT_EQ(thread.loop().Modify(event.fd(), EPOLLIN).error().errno_value(), ENOENT);
}

TEST(EventLoopTest, ModifyChangesEvents) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<int> calls{0};
  // EPOLLOUT: an eventfd is always writable, so the handler runs until events change.
  ASSERT_TRUE(thread.loop()
                  .Add(
                      event.fd(), [&] { ++calls; }, EPOLLOUT)
                  .ok());
  EXPECT_TRUE(WaitFor([&] { return calls > 10; }));
  ASSERT_TRUE(thread.loop().Modify(event.fd(), EPOLLIN).ok());
  thread.loop().RunSync([] {});  // any EPOLLOUT batch in flight has been dispatched
  int after = calls;
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls, after);
}

TEST(EventLoopTest, RemoveWaitsForRunningHandler) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<bool> entered{false};
  std::atomic<bool> finished{false};
  ASSERT_TRUE(thread.loop()
                  .Add(event.fd(),
                       [&] {
                         (void)event.Read();
                         entered = true;
                         std::this_thread::sleep_for(100ms);
                         finished = true;
                       })
                  .ok());
  ASSERT_TRUE(event.Write().ok());
  ASSERT_TRUE(WaitFor([&] { return entered.load(); }));
  ASSERT_TRUE(thread.loop().Remove(event.fd()).ok());
  EXPECT_TRUE(finished);
}

TEST(EventLoopTest, RemovedHandlerDoesNotRunAgain) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<int> calls{0};
  ASSERT_TRUE(thread.loop().Add(event.fd(), [&] { ++calls; }).ok());  // never reads: stays ready
  ASSERT_TRUE(event.Write().ok());
  ASSERT_TRUE(WaitFor([&] { return calls > 0; }));
  ASSERT_TRUE(thread.loop().Remove(event.fd()).ok());
  int after = calls;
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls, after);
}

TEST(EventLoopTest, HandlerCanRemoveItselfAndAddOthers) {
  LoopThread thread;
  EventFd first = MakeEventFd();
  EventFd second = MakeEventFd();
  std::atomic<int> first_calls{0};
  std::atomic<int> second_calls{0};
  ASSERT_TRUE(thread.loop()
                  .Add(first.fd(),
                       [&] {
                         ++first_calls;
                         EXPECT_TRUE(thread.loop().Remove(first.fd()).ok());
                         EXPECT_TRUE(thread.loop().Add(second.fd(), [&] { ++second_calls; }).ok());
                       })
                  .ok());
  ASSERT_TRUE(first.Write().ok());
  ASSERT_TRUE(second.Write().ok());
  EXPECT_TRUE(WaitFor([&] { return second_calls > 0; }));
  EXPECT_EQ(first_calls, 1);
  ASSERT_TRUE(thread.loop().Remove(second.fd()).ok());
}

TEST(EventLoopTest, RunSyncRunsOnLoopThreadAndWaits) {
  LoopThread thread;
  std::promise<std::thread::id> loop_id;
  EventFd event = MakeEventFd();
  ASSERT_TRUE(thread.loop()
                  .Add(event.fd(),
                       [&] {
                         (void)event.Read();
                         loop_id.set_value(std::this_thread::get_id());
                       })
                  .ok());
  ASSERT_TRUE(event.Write().ok());
  std::thread::id handler_id = loop_id.get_future().get();
  ASSERT_TRUE(thread.loop().Remove(event.fd()).ok());
  std::thread::id task_id;
  bool done = false;
  thread.loop().RunSync([&] {
    std::this_thread::sleep_for(20ms);
    task_id = std::this_thread::get_id();
    done = true;
  });
  EXPECT_TRUE(done);
  EXPECT_EQ(task_id, handler_id);
  EXPECT_NE(task_id, std::this_thread::get_id());
}

TEST(EventLoopTest, RunSyncFromLoopThreadRunsAtOnce) {
  LoopThread thread;
  bool inner = false;
  thread.loop().RunSync([&] { thread.loop().RunSync([&] { inner = true; }); });
  EXPECT_TRUE(inner);
}

TEST(EventLoopTest, RunSyncWithoutRunningLoopRunsOnCaller) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  std::thread::id id;
  (*loop)->RunSync([&] { id = std::this_thread::get_id(); });
  EXPECT_EQ(id, std::this_thread::get_id());
}

TEST(EventLoopTest, StopBeforeRunReturnsAtOnce) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  (*loop)->Stop();
  (*loop)->Stop();
  auto done = std::async(std::launch::async, [&] { (*loop)->Run(); });
  EXPECT_EQ(done.wait_for(5s), std::future_status::ready);
}

TEST(EventLoopTest, ConcurrentRunSyncCallersAllComplete) {
  LoopThread thread;
  std::atomic<int> count{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      for (int j = 0; j < 100; ++j) thread.loop().RunSync([&] { ++count; });
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(count, 400);
}

TEST(EventLoopTest, PauseHoldsEventsUntilResume) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<uint64_t> total{0};
  ASSERT_TRUE(thread.loop().Add(event.fd(), [&] { total += event.Read().value(); }).ok());
  thread.loop().Pause();
  thread.loop().Pause();  // idempotent
  ASSERT_TRUE(event.Write(5).ok());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(total, 0u);
  int ran = 0;
  thread.loop().RunSync([&] { ++ran; });  // tasks still run while paused
  EXPECT_EQ(ran, 1);
  thread.loop().Resume();
  EXPECT_TRUE(WaitFor([&] { return total == 5; }));
}

TEST(EventLoopTest, PauseWaitsForRunningHandler) {
  LoopThread thread;
  EventFd event = MakeEventFd();
  std::atomic<bool> in_handler{false}, handler_done{false};
  ASSERT_TRUE(thread.loop()
                  .Add(event.fd(),
                       [&] {
                         (void)event.Read();
                         in_handler = true;
                         std::this_thread::sleep_for(100ms);
                         handler_done = true;
                       })
                  .ok());
  ASSERT_TRUE(event.Write(1).ok());
  ASSERT_TRUE(WaitFor([&] { return in_handler.load(); }));
  thread.loop().Pause();
  EXPECT_TRUE(handler_done);
  thread.loop().Resume();
}

TEST(EventLoopTest, StopEndsAPausedLoop) {
  auto loop = EventLoop::Create();
  ASSERT_TRUE(loop.ok());
  (*loop)->Pause();  // before Run(): returns at once, Run() parks
  auto done = std::async(std::launch::async, [&] { (*loop)->Run(); });
  EXPECT_EQ(done.wait_for(50ms), std::future_status::timeout);
  (*loop)->Stop();
  EXPECT_EQ(done.wait_for(5s), std::future_status::ready);
}

}  // namespace
}  // namespace tern
